//! The audit chain's hash algorithm: SHA-256 (FIPS 180-4, the default) or
//! SM3 (GB/T 32905-2016, the national standard that 商用密码应用安全性评估,
//! GB/T 39786-2021, expects), and the HMAC of the same hash (RFC 2104) that
//! seals rows ([`super::seal`]).
//!
//! A chain records its algorithm when it is created (table `audit_meta`,
//! key `hash`); a chain without that row is SHA-256 (every registry made
//! before the choice existed).

use hmac::{KeyInit, Mac};
use sha2::Digest;

/// The hash of an audit chain and the HMAC of its seals. Read from the
/// configuration's `audit_hash` as `"sha256"` or `"sm3"`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum HashAlg {
    /// SHA-256 (FIPS 180-4); HMAC-SHA256 seals.
    #[default]
    Sha256,
    /// SM3 (GB/T 32905-2016); HMAC-SM3 seals.
    Sm3,
}

impl HashAlg {
    /// Every algorithm.
    pub const ALL: [HashAlg; 2] = [HashAlg::Sha256, HashAlg::Sm3];

    /// `sha256` or `sm3`: the configuration's and the registry's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlg::Sha256 => "sha256",
            HashAlg::Sm3 => "sm3",
        }
    }

    /// Reads `sha256` or `sm3`.
    pub fn parse(s: &str) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The digest of `parts` joined by `sep` (none when `None`).
    pub fn digest(self, parts: &[&[u8]], sep: Option<u8>) -> [u8; 32] {
        fn run<D: Digest>(parts: &[&[u8]], sep: Option<u8>) -> [u8; 32] {
            let mut h = D::new();
            for (i, p) in parts.iter().enumerate() {
                if let (true, Some(s)) = (i > 0, sep) {
                    h.update([s]);
                }
                h.update(p);
            }
            let mut out = [0u8; 32];
            out.copy_from_slice(&h.finalize()[..32]);
            out
        }
        match self {
            HashAlg::Sha256 => run::<sha2::Sha256>(parts, sep),
            HashAlg::Sm3 => run::<sm3::Sm3>(parts, sep),
        }
    }

    /// HMAC of `msg` under `key` (RFC 2104 with this hash).
    pub fn hmac(self, key: &[u8], msg: &[u8]) -> [u8; 32] {
        fn run<M: Mac + KeyInit>(key: &[u8], msg: &[u8]) -> [u8; 32] {
            // HMAC takes a key of any length (RFC 2104 §2): never an error.
            let mut m = match <M as KeyInit>::new_from_slice(key) {
                Ok(m) => m,
                Err(_) => return [0u8; 32],
            };
            m.update(msg);
            let mut out = [0u8; 32];
            out.copy_from_slice(&m.finalize().into_bytes()[..32]);
            out
        }
        match self {
            HashAlg::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, msg),
            HashAlg::Sm3 => run::<hmac::Hmac<sm3::Sm3>>(key, msg),
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HashAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<HashAlg, String> {
        HashAlg::parse(s).ok_or_else(|| format!("unknown audit hash {s:?}: sha256 or sm3"))
    }
}

impl TryFrom<String> for HashAlg {
    type Error = String;
    fn try_from(s: String) -> Result<HashAlg, String> {
        s.parse()
    }
}

impl From<HashAlg> for String {
    fn from(a: HashAlg) -> String {
        a.as_str().to_string()
    }
}

/// What a chain's algorithm is, given what the registry recorded, whether
/// the chain has rows, and what the configuration asks for (`None`: not
/// set). Returns the algorithm and whether it must be recorded now.
///
/// A chain with rows keeps its algorithm: asking for the other one is an
/// error (its rows could no longer be verified, and a chain of two
/// algorithms would be one an intruder could switch). An empty chain takes
/// what is asked (default SHA-256).
pub fn settle(
    recorded: Option<HashAlg>,
    has_rows: bool,
    want: Option<HashAlg>,
) -> Result<(HashAlg, bool), String> {
    let have = match (recorded, has_rows) {
        (Some(r), true) => r,
        (None, true) => HashAlg::Sha256,
        (_, false) => {
            let alg = want.or(recorded).unwrap_or_default();
            return Ok((alg, recorded != Some(alg)));
        }
    };
    match want {
        Some(w) if w != have => Err(format!(
            "the registry's audit chain is {have} and has rows; audit_hash = \"{w}\" cannot change it \
             (remove audit_hash, or set it to \"{have}\")"
        )),
        _ => Ok((have, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GB/T 32905-2016, appendix A: example 1 ("abc") and example 2 (the
    /// 64 bytes "abcd" × 16).
    #[test]
    fn sm3_gives_the_standards_test_vectors() {
        assert_eq!(
            hex::encode(HashAlg::Sm3.digest(&[b"abc"], None)),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
        let abcd = b"abcd".repeat(16);
        assert_eq!(
            hex::encode(HashAlg::Sm3.digest(&[&abcd], None)),
            "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
        );
        // Parts joined by a separator are the bytes joined.
        assert_eq!(
            HashAlg::Sm3.digest(&[b"ab", b"c"], Some(0x1F)),
            HashAlg::Sm3.digest(&[b"ab\x1Fc"], None)
        );
    }

    /// FIPS 180-4's "abc", and RFC 4231 test case 1 for HMAC-SHA256.
    #[test]
    fn sha256_and_its_hmac_give_the_published_vectors() {
        assert_eq!(
            hex::encode(HashAlg::Sha256.digest(&[b"abc"], None)),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(HashAlg::Sha256.hmac(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    /// HMAC-SM3 is HMAC (RFC 2104) over SM3 with its 64-byte block:
    /// computed here by the definition and compared.
    #[test]
    fn hmac_sm3_follows_rfc_2104() {
        let key = b"cardlink";
        let msg = b"abc";
        let mut k = [0u8; 64];
        k[..key.len()].copy_from_slice(key);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = HashAlg::Sm3.digest(&[&ipad, msg], None);
        let outer = HashAlg::Sm3.digest(&[&opad, &inner], None);
        assert_eq!(HashAlg::Sm3.hmac(key, msg), outer);
        assert_ne!(HashAlg::Sm3.hmac(key, msg), HashAlg::Sha256.hmac(key, msg));
    }

    #[test]
    fn a_chain_keeps_its_algorithm() {
        use HashAlg::*;
        assert_eq!(settle(None, false, None), Ok((Sha256, true)));
        assert_eq!(settle(None, false, Some(Sm3)), Ok((Sm3, true)));
        assert_eq!(settle(None, true, None), Ok((Sha256, false)));
        assert_eq!(settle(Some(Sm3), true, None), Ok((Sm3, false)));
        assert_eq!(settle(Some(Sm3), true, Some(Sm3)), Ok((Sm3, false)));
        assert_eq!(settle(Some(Sha256), false, Some(Sm3)), Ok((Sm3, true)));
        let e = settle(None, true, Some(Sm3)).unwrap_err();
        assert!(e.contains("is sha256 and has rows"), "{e}");
        assert!(settle(Some(Sm3), true, Some(Sha256)).is_err());
    }
}
