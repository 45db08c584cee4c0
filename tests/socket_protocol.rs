//! Every JSON example of docs/socket-protocol.md is parsed with the wire
//! types of `cardlink::protocol` and encodes back to the same JSON: the
//! document cannot show a field, a value or a shape the daemon does not
//! send or read.

use cardlink::protocol::{self, Message, PageRequest, ReaderStatus};
use serde_json::{json, Value};

const DOC: &str = include_str!("../docs/socket-protocol.md");

/// The JSON examples: each object of a ```json block (an object starts at
/// a line's first column; indented lines continue it) and each inline
/// `{…}` code span.
fn examples() -> Vec<String> {
    let mut out = Vec::new();
    let mut prose = String::new();
    for (i, part) in DOC.split("```").enumerate() {
        if i % 2 == 0 {
            prose += part;
            continue;
        }
        let Some(block) = part.strip_prefix("json\n") else {
            continue;
        };
        // A block in a list item is indented as a whole.
        let indent = block
            .lines()
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.len() - l.trim_start().len());
        let mut current = String::new();
        for line in block.lines() {
            let line = line.get(indent..).unwrap_or(line.trim_start());
            if line.starts_with('{') && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            current += line;
            current += "\n";
        }
        if !current.trim().is_empty() {
            out.push(current);
        }
    }
    for span in prose.split('`').skip(1).step_by(2) {
        if span.starts_with('{') {
            out.push(span.to_string());
        }
    }
    out
}

fn round_trip(text: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let back = if v.get("class").is_some() {
        let m: Message = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&m).map_err(|e| e.to_string())?
    } else if v.get("cmd").is_some() {
        match protocol::parse_page_request(text.as_bytes()).map_err(|e| e.message)? {
            PageRequest::Daemon(r) => serde_json::to_value(&r).map_err(|e| e.to_string())?,
            PageRequest::BindStart { id } => json!({"id": id, "cmd": "bind_start"}),
            PageRequest::End { id } => json!({"id": id, "cmd": "end"}),
            PageRequest::Keep { id, elder } => json!({"id": id, "cmd": "keep", "elder": elder}),
        }
    } else if v.get("mode").is_some() {
        let r: ReaderStatus = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&r).map_err(|e| e.to_string())?
    } else {
        return Err("neither a message, a request nor a status row".into());
    };
    if back == v {
        Ok(())
    } else {
        Err(format!("encodes back as {back}"))
    }
}

#[test]
fn every_json_example_parses_and_round_trips() {
    let examples = examples();
    // Every message class and request of the document is among them.
    for needle in [
        "\"VERSION\"",
        "\"READER\"",
        "\"CARD\"",
        "\"REMOVED\"",
        "\"ROLE\"",
        "\"ERROR\"",
        "\"REPLY\"",
        "\"DISPLAY\"",
        "\"SESSION\"",
        "\"lookup\"",
        "\"bind\"",
        "\"unbind\"",
        "\"contributions\"",
        "\"status\"",
        "\"capture\"",
        "\"bind_start\"",
        "\"end\"",
        "\"keep\"",
    ] {
        assert!(
            examples.iter().any(|e| e.contains(needle)),
            "no example with {needle}"
        );
    }
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|e| round_trip(e).err().map(|why| format!("{e}\n  => {why}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} examples:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}

/// The check itself: a field the types do not know, a value they do not
/// have, or a field they would not send fails.
#[test]
fn a_wrong_example_fails() {
    assert!(round_trip(r#"{"class":"ROLE","role":"kiosk"}"#).is_ok());
    assert!(round_trip(r#"{"class":"ROLE","role":"clerk"}"#).is_err());
    assert!(round_trip(r#"{"class":"READER","reader":"r","state":"up","path":"/p"}"#).is_err());
    assert!(round_trip(r#"{"class":"SESSION","ended":"idle","extra":1}"#).is_err());
    assert!(round_trip(r#"{"class":"REPLY","id":1,"ok":true,"result":{"bound":"yes"}}"#).is_err());
    assert!(round_trip(r#"{"id":1,"cmd":"status","x":1}"#).is_err());
}
