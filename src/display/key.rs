//! The screen key: what lets a browser drive this display, and nothing
//! else on the box.
//!
//! Origin and Host checks stop other web pages, not local processes: any
//! local uid can open a TCP connection to 127.0.0.1 and forge both
//! headers. So the WebSocket also requires a secret that only the screen's
//! user can read. The display keeps it in `screen.key` in its key
//! directory (made once, kept across restarts of the display), mode 0640:
//! the display's own group (`cardlink-screen` in the shipped unit) may read
//! it, nobody else. Beside it, `screen.html` (same mode) is the page the
//! kiosk browser opens at start: it posts the key to `/login`, which sets it
//! as an `HttpOnly`, `SameSite=Strict` cookie and sends the browser to the
//! screen. The key never appears in a URL, in the browser's command line
//! (visible to every local user in `ps`) or in its history.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The name of the cookie that carries the key.
pub const COOKIE: &str = "cardlink_screen";
/// The key file in the key directory.
pub const KEY_FILE: &str = "screen.key";
/// The login page in the key directory.
pub const LOGIN_FILE: &str = "screen.html";
/// Mode of both files: the display's group reads them, others nothing.
const MODE: u32 = 0o640;

/// Why the key could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file of the key directory could not be read or written.
    #[error("screen key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The secret a page must present (as a cookie) to open `/ws`.
#[derive(Clone)]
pub struct ScreenKey(Arc<str>);

impl std::fmt::Debug for ScreenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScreenKey(***)")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `text` to `path` with [`MODE`] through a temporary file and a
/// rename, never following a link someone left at either name.
fn write_private(path: &Path, text: &str) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // The umask may have taken bits away; set exactly MODE.
    f.set_permissions(std::fs::Permissions::from_mode(MODE))
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn well_formed(k: &str) -> bool {
    k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ScreenKey {
    /// A new random key (256 bits from the thread's CSPRNG, hex).
    pub fn random() -> ScreenKey {
        ScreenKey(hex::encode(rand::random::<[u8; 32]>()).into())
    }

    /// The key in `dir/screen.key`, or a new one written there when there
    /// is none (or it is not a key); `dir/screen.html`, the login page for
    /// the display listening on `listen`, is written anew.
    pub fn load_or_create(dir: &Path, listen: SocketAddr) -> Result<ScreenKey, KeyError> {
        let path = dir.join(KEY_FILE);
        let existing = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(std::io::read_to_string);
        let key = match existing {
            Ok(k) if well_formed(k.trim()) => {
                // Kept, but never readable by more than MODE allows.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(MODE))
                    .map_err(io(&path))?;
                ScreenKey(k.trim().into())
            }
            Ok(_) => {
                tracing::warn!(path = %path.display(), "screen key file is not a key; making a new one");
                Self::create(&path)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path)?,
            Err(e) => return Err(io(&path)(e)),
        };
        write_private(&dir.join(LOGIN_FILE), &key.login_page(listen))?;
        Ok(key)
    }

    fn create(path: &Path) -> Result<ScreenKey, KeyError> {
        let key = ScreenKey::random();
        write_private(path, &format!("{}\n", key.0))?;
        tracing::info!(path = %path.display(), "made a new screen key");
        Ok(key)
    }

    /// Whether `given` is the key (compared in constant time).
    pub fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The key, for the `Set-Cookie` of a successful login (and for tests
    /// that play the browser).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The page a browser opens to log in: it posts the key to `/login`.
    pub fn login_page(&self, listen: SocketAddr) -> String {
        let host = if listen.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], listen.port()))
        } else {
            listen
        };
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>cardlink</title></head>\n\
             <body><form method=\"post\" action=\"http://{host}/login\">\
             <input type=\"hidden\" name=\"key\" value=\"{}\"></form>\n\
             <script>document.forms[0].submit()</script></body></html>\n",
            self.0
        )
    }

    /// Whether a `Cookie` header carries the key.
    pub fn in_cookie_header(&self, header: &str) -> bool {
        header
            .split(';')
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|v| self.matches(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_kept_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:8780".parse().unwrap();
        let k1 = ScreenKey::load_or_create(dir.path(), addr).unwrap();
        let k2 = ScreenKey::load_or_create(dir.path(), addr).unwrap();
        assert_eq!(k1.expose(), k2.expose());
        for f in [KEY_FILE, LOGIN_FILE] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o640, "{f}");
        }
        let page = std::fs::read_to_string(dir.path().join(LOGIN_FILE)).unwrap();
        assert!(page.contains("http://127.0.0.1:8780/login"));
        assert!(page.contains(k1.expose()));
        assert!(k1.in_cookie_header(&format!("a=b; {COOKIE}={}", k1.expose())));
        assert!(!k1.in_cookie_header(&format!("{COOKIE}={}", ScreenKey::random().expose())));
        assert!(!k1.in_cookie_header(&format!("x{COOKIE}={}", k1.expose())));
        assert!(!k1.matches(""));
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        let k3 = ScreenKey::load_or_create(dir.path(), addr).unwrap();
        assert_ne!(k3.expose(), k1.expose());
    }
}
