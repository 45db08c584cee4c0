//! `verify-audit --verify-key`: the hash chain and every box's seals,
//! with each way a chain can have been tampered with named apart.
//!
//! Given the auditor's verification keys (`k_0` of each box) and, where it
//! can be read, each box's key file (for the index the box has reached),
//! the rows are walked once in id order:
//!
//! - a row whose content does not match its hash: **edited**;
//! - an id missing, or a box's seal indices not consecutive: **deleted**;
//! - hashes consistent but a seal that does not match: the chain was
//!   **recomputed** by someone without the key;
//! - a box's key past its last sealed row plus one: **rows cut from the
//!   end** (a crash between a commit and the key's move leaves the key at
//!   the last row, which is accepted; see [`super::seal`]);
//! - a box's key file gone: **sealing key missing** (how far the box got
//!   can no longer be told);
//! - a row after sealing began without a seal, a seal of a box no key was
//!   given for, a key file whose key is not the box's key at its index (set
//!   back by hand): **forged**.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::audit::{Break, Chain, Row};
use super::hash::HashAlg;
use super::seal::{mac, KeyState, KeyWalk, SealError, VerifyKey};

/// What is wrong with a sealed chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Problem {
    /// A row's content does not match its hash.
    Edited,
    /// The hashes agree but the seals do not: the chain was recomputed.
    /// (Named before the deletions a recomputation usually hides.)
    Recomputed,
    /// Rows are missing from the middle of the chain.
    Deleted,
    /// Rows were cut from the end (the box's key moved past them).
    Truncated,
    /// Unsealed or foreign rows where seals are due, or a key file set back.
    Forged,
    /// A box's sealing key file is gone.
    KeyMissing,
}

impl Problem {
    /// `cardlinkctl db verify-audit`'s exit status for it (0: intact, 1:
    /// the unsealed chain broken, 2: the tool failed).
    pub fn exit_code(self) -> i32 {
        match self {
            Problem::Edited => 3,
            Problem::Deleted => 4,
            Problem::Truncated => 5,
            Problem::Recomputed => 6,
            Problem::KeyMissing => 7,
            Problem::Forged => 8,
        }
    }

    /// The name printed before each finding.
    pub fn label(self) -> &'static str {
        match self {
            Problem::Edited => "EDITED ROW",
            Problem::Deleted => "DELETED ROWS",
            Problem::Recomputed => "CHAIN RECOMPUTED",
            Problem::Truncated => "ROWS CUT FROM THE END",
            Problem::Forged => "FORGED",
            Problem::KeyMissing => "SEALING KEY MISSING",
        }
    }
}

/// One thing found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Its kind.
    pub problem: Problem,
    /// The sentence.
    pub text: String,
}

/// What each box sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxSummary {
    /// The box.
    pub box_id: String,
    /// Rows it sealed.
    pub rows: u64,
    /// Its last seal index in the registry.
    pub last: Option<i64>,
    /// The index its key file has reached, when read.
    pub key_index: Option<u64>,
}

/// The result of a sealed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReport {
    /// Rows checked.
    pub rows: u64,
    /// The chain's algorithm.
    pub alg: HashAlg,
    /// Per box.
    pub boxes: Vec<BoxSummary>,
    /// Every finding, at most [`SealReport::EXAMPLES`] of each kind
    /// (and a count of the rest).
    pub findings: Vec<Finding>,
    /// Notes that are not failures (a box whose key file was not given).
    pub notes: Vec<String>,
}

impl SealReport {
    /// Findings kept per kind.
    pub const EXAMPLES: usize = 5;

    /// The finding that names the chain's state: the first of the most
    /// telling kind (edits and deletions before the seals' failures they
    /// cause).
    pub fn primary(&self) -> Option<&Finding> {
        self.findings.iter().min_by_key(|f| f.problem)
    }
}

struct BoxWalk {
    keys: KeyWalk,
    rows: u64,
    last: Option<i64>,
}

/// Walks a chain's rows, checking hashes and seals.
pub(crate) struct Verifier {
    chain: Chain,
    alg: HashAlg,
    keys: BTreeMap<String, (VerifyKey, BoxWalk)>,
    from: i64,
    findings: Vec<Finding>,
    counts: BTreeMap<Problem, u64>,
    prev_id: i64,
}

impl Verifier {
    /// A walk of a chain of `alg` with the auditor's `keys`.
    pub(crate) fn new(alg: HashAlg, keys: Vec<VerifyKey>) -> Result<Verifier, String> {
        let mut by_box = BTreeMap::new();
        let mut from = i64::MAX;
        for k in keys {
            if k.alg != alg {
                return Err(format!(
                    "the verification key of box {} is for a {} chain; this registry's is {alg}",
                    k.box_id, k.alg
                ));
            }
            from = from.min(k.from);
            let walk = BoxWalk {
                keys: k.keys(),
                rows: 0,
                last: None,
            };
            if by_box.insert(k.box_id.clone(), (k, walk)).is_some() {
                return Err("two verification keys of the same box".into());
            }
        }
        // Rows from the last box's first sealed row on must all be sealed.
        let last_from = by_box.values().map(|(k, _)| k.from).max();
        Ok(Verifier {
            chain: Chain::new(alg),
            alg,
            keys: by_box,
            from: last_from.unwrap_or(from),
            findings: Vec::new(),
            counts: BTreeMap::new(),
            prev_id: 0,
        })
    }

    fn found(&mut self, problem: Problem, text: String) {
        let n = self.counts.entry(problem).or_default();
        *n += 1;
        if *n <= SealReport::EXAMPLES as u64 {
            self.findings.push(Finding { problem, text });
        }
    }

    /// Checks the next row.
    pub(crate) fn row(&mut self, r: &Row) {
        match self.chain.check_row(r) {
            None => {}
            Some(Break::Gap { expected, found }) if found > expected => self.found(
                Problem::Deleted,
                format!(
                    "row {expected}{} deleted: row {} is followed by row {found}",
                    if found - expected > 1 {
                        format!(" to {} were", found - 1)
                    } else {
                        " was".into()
                    },
                    self.prev_id
                ),
            ),
            Some(b @ Break::Gap { .. }) => {
                self.found(Problem::Forged, format!("row {}: {b}", r.id));
            }
            Some(Break::Prev) => self.found(
                Problem::Edited,
                format!(
                    "row {} was edited and its hash recomputed: row {} names another hash as its predecessor's",
                    self.prev_id, r.id
                ),
            ),
            Some(Break::Content) => self.found(
                Problem::Edited,
                format!("row {} was edited: its content does not match its hash", r.id),
            ),
        }
        self.prev_id = r.id;
        let Some(seal) = &r.seal else {
            if !self.keys.is_empty() && r.id >= self.from {
                self.found(
                    Problem::Forged,
                    format!(
                        "row {} carries no seal, though every box seals from row {} on",
                        r.id, self.from
                    ),
                );
            }
            return;
        };
        let alg = self.alg;
        let Some((_, walk)) = self.keys.get_mut(&seal.box_id) else {
            let text = format!(
                "row {} is sealed by box {:?}, for which no verification key was given",
                r.id, seal.box_id
            );
            self.found(Problem::Forged, text);
            return;
        };
        walk.rows += 1;
        let expected = walk.last.map_or(0, |l| l + 1);
        let gap = (seal.index > expected).then_some(expected);
        let back = seal.index < expected;
        walk.last = Some(walk.last.map_or(seal.index, |l| l.max(seal.index)));
        let good = seal.index >= 0
            && mac(
                alg,
                &walk.keys.at(seal.index as u64),
                &seal.box_id,
                seal.index as u64,
                &r.hash,
            ) == seal.mac;
        let box_id = seal.box_id.clone();
        let index = seal.index;
        if let Some(e) = gap {
            self.found(
                Problem::Deleted,
                format!(
                    "box {box_id}'s sealed rows {e} to {} are missing before row {} (seal index {index})",
                    index - 1,
                    r.id
                ),
            );
        }
        if back {
            self.found(
                Problem::Forged,
                format!("row {} repeats box {box_id}'s seal index {index}", r.id),
            );
        }
        if !good {
            self.found(
                Problem::Recomputed,
                format!(
                    "row {}'s seal does not match (box {box_id}, index {index}): the row or the chain before it was rewritten by someone without the key",
                    r.id
                ),
            );
        }
    }

    /// The report, given each box's key file as read (`path`, state).
    pub(crate) fn finish(
        mut self,
        states: Vec<(PathBuf, Result<KeyState, SealError>)>,
    ) -> SealReport {
        let mut notes = Vec::new();
        let mut by_box: BTreeMap<String, (PathBuf, Result<KeyState, SealError>)> = BTreeMap::new();
        let mut unmatched = Vec::new();
        for (path, state) in states {
            match &state {
                Ok(s) if self.keys.contains_key(&s.box_id) => {
                    by_box.insert(s.box_id.clone(), (path, state));
                }
                Ok(s) => notes.push(format!(
                    "{}: key file of box {}, for which no verification key was given",
                    path.display(),
                    s.box_id
                )),
                Err(_) => unmatched.push((path, state)),
            }
        }
        // A key file that could not be read stands for the one box whose
        // file was not found otherwise (one box: SQLite's usual case).
        let orphans: Vec<String> = self
            .keys
            .keys()
            .filter(|b| !by_box.contains_key(*b))
            .cloned()
            .collect();
        for (path, state) in unmatched {
            let text = match &state {
                Err(SealError::Missing(_)) => format!(
                    "{}: the sealing key file is gone{}; how far the box got can no longer be checked",
                    path.display(),
                    match orphans.as_slice() {
                        [b] => format!(" (box {b})"),
                        _ => String::new(),
                    }
                ),
                Err(e) => format!("{e}; how far the box got cannot be checked"),
                Ok(_) => continue,
            };
            self.found(Problem::KeyMissing, text);
            if let [b] = orphans.as_slice() {
                by_box.insert(b.clone(), (path, state));
            }
        }
        let mut boxes = Vec::new();
        let mut findings = Vec::new();
        for (box_id, (vk, walk)) in &self.keys {
            let mut summary = BoxSummary {
                box_id: box_id.clone(),
                rows: walk.rows,
                last: walk.last,
                key_index: None,
            };
            match by_box.get(box_id) {
                Some((path, Ok(state))) => {
                    summary.key_index = Some(state.index);
                    let next = walk.last.map_or(0, |l| l + 1) as u64;
                    if !vk.vouches_for(state) {
                        findings.push((
                            Problem::Forged,
                            format!(
                                "{}: box {box_id}'s key file does not hold the box's key at its index {}: it was replaced or set back",
                                path.display(),
                                state.index
                            ),
                        ));
                    } else if state.index > next {
                        findings.push((
                            Problem::Truncated,
                            format!(
                                "box {box_id}'s key is at seal index {}, but its last sealed row in the registry has index {}: {} sealed row(s) were cut from the end",
                                state.index,
                                walk.last.map_or("none".to_string(), |l| l.to_string()),
                                state.index - next
                            ),
                        ));
                    }
                }
                Some((_, Err(_))) => {}
                None => notes.push(format!(
                    "box {box_id}: its key file was not given (--key-state); rows cut from the end are not checked"
                )),
            }
            boxes.push(summary);
        }
        for (p, t) in findings {
            self.found(p, t);
        }
        for (p, n) in &self.counts {
            if *n > SealReport::EXAMPLES as u64 {
                self.findings.push(Finding {
                    problem: *p,
                    text: format!(
                        "… and {} more of this kind",
                        n - SealReport::EXAMPLES as u64
                    ),
                });
            }
        }
        SealReport {
            rows: self.chain.rows(),
            alg: self.alg,
            boxes,
            findings: self.findings,
            notes,
        }
    }
}
