//! Request bodies: JSON, CSV and form-urlencoded, normalised to JSON.

use serde_json::{Map, Value};

use super::media::RequestMedia;
use crate::error::{ErrorKind, RestError};

pub fn invalid_json() -> RestError {
    RestError::new(ErrorKind::InvalidBody, "Empty or invalid json")
}

/// Decodes a body into JSON; `empty_default` is used for an empty body (RPC: `{}`).
pub fn decode_body(
    media: RequestMedia,
    body: &[u8],
    empty_default: Option<Value>,
) -> Result<Value, RestError> {
    let text = std::str::from_utf8(body).map_err(|_| invalid_json())?;
    if text.trim().is_empty() {
        return empty_default.ok_or_else(invalid_json);
    }
    match media {
        RequestMedia::Csv => decode_csv(text),
        RequestMedia::FormUrlEncoded => {
            let mut obj = Map::new();
            for (k, v) in form_urlencoded::parse(text.as_bytes()) {
                obj.entry(k.into_owned())
                    .or_insert(Value::String(v.into_owned()));
            }
            Ok(Value::Object(obj))
        }
        // Clients that forget the Content-Type (supabase-js #1562) still send JSON.
        RequestMedia::Json
        | RequestMedia::TextPlain
        | RequestMedia::Xml
        | RequestMedia::OctetStream
        | RequestMedia::Other => serde_json::from_str(text).map_err(|_| invalid_json()),
    }
}

/// The column names of an insert/update payload; all objects must share them.
pub fn payload_keys(value: &Value) -> Result<Vec<String>, RestError> {
    let non_uniform = || RestError::new(ErrorKind::InvalidBody, "All object keys must match");
    match value {
        Value::Object(o) => Ok(o.keys().cloned().collect()),
        Value::Array(items) => {
            let mut keys: Option<Vec<String>> = None;
            for item in items {
                let Value::Object(o) = item else {
                    return Err(non_uniform());
                };
                let mut these: Vec<String> = o.keys().cloned().collect();
                these.sort();
                match &keys {
                    None => keys = Some(these),
                    Some(k) if *k == these => {}
                    Some(_) => return Err(non_uniform()),
                }
            }
            // Keep the first object's key order for stable SQL.
            Ok(match items.first() {
                Some(Value::Object(o)) => o.keys().cloned().collect(),
                _ => Vec::new(),
            })
        }
        _ => Err(invalid_json()),
    }
}

fn decode_csv(text: &str) -> Result<Value, RestError> {
    let bad = || RestError::new(ErrorKind::InvalidBody, "Error in CSV body");
    let rows = split_csv(text).ok_or_else(bad)?;
    let mut iter = rows.into_iter();
    let header = iter.next().ok_or_else(bad)?;
    let mut out = Vec::new();
    for row in iter {
        if row.len() == 1 && row[0].as_deref() == Some("") {
            continue;
        }
        if row.len() != header.len() {
            return Err(bad());
        }
        let mut obj = Map::new();
        for (h, cell) in header.iter().zip(row) {
            let key = h.clone().unwrap_or_default();
            // PostgREST reads an unquoted NULL as SQL NULL.
            obj.insert(key, cell.map(Value::String).unwrap_or(Value::Null));
        }
        out.push(Value::Object(obj));
    }
    Ok(Value::Array(out))
}

/// RFC 4180 split; an unquoted `NULL` cell becomes `None`.
fn split_csv(text: &str) -> Option<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cell = String::new();
    let mut quoted_cell = false;
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let push_cell = |row: &mut Vec<Option<String>>, cell: &mut String, quoted: &mut bool| {
        let c = std::mem::take(cell);
        row.push(if !*quoted && c == "NULL" {
            None
        } else {
            Some(c)
        });
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cell.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cell.push(c);
            }
            continue;
        }
        match c {
            '"' if cell.is_empty() => {
                in_quotes = true;
                quoted_cell = true;
            }
            ',' => push_cell(&mut row, &mut cell, &mut quoted_cell),
            '\r' => {}
            '\n' => {
                push_cell(&mut row, &mut cell, &mut quoted_cell);
                rows.push(std::mem::take(&mut row));
            }
            c => cell.push(c),
        }
    }
    if in_quotes {
        return None;
    }
    if !cell.is_empty() || !row.is_empty() || quoted_cell {
        push_cell(&mut row, &mut cell, &mut quoted_cell);
        rows.push(row);
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_bodies() {
        assert_eq!(
            decode_body(RequestMedia::Json, b"{\"a\":1}", None).unwrap(),
            json!({"a":1})
        );
        assert_eq!(
            decode_body(RequestMedia::Json, b"", Some(json!({}))).unwrap(),
            json!({})
        );
        assert_eq!(
            decode_body(RequestMedia::TextPlain, b"[1]", None).unwrap(),
            json!([1])
        );
        for bad in [&b""[..], b"{", b"nope", b"\xff\xfe"] {
            let e = decode_body(RequestMedia::Json, bad, None).unwrap_err();
            assert_eq!(e.code, "PGRST102");
        }
    }

    #[test]
    fn uniform_keys() {
        assert_eq!(payload_keys(&json!({"a":1,"b":2})).unwrap(), vec!["a", "b"]);
        assert_eq!(
            payload_keys(&json!([{"a":1,"b":2},{"b":3,"a":4}])).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(payload_keys(&json!([])).unwrap(), Vec::<String>::new());
        for bad in [
            json!([{"a":1},{"b":1}]),
            json!([{"a":1},{"a":1,"b":2}]),
            json!([1]),
            json!(3),
            json!("x"),
        ] {
            assert!(payload_keys(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_and_form() {
        let v = decode_body(
            RequestMedia::Csv,
            b"name,status\nAcme,lead\n\"B, Inc\",NULL\n",
            None,
        )
        .unwrap();
        assert_eq!(
            v,
            json!([{"name":"Acme","status":"lead"},{"name":"B, Inc","status":null}])
        );
        let v = decode_body(RequestMedia::Csv, b"a\r\n\"x\"\"y\"", None).unwrap();
        assert_eq!(v, json!([{"a":"x\"y"}]));
        assert!(decode_body(RequestMedia::Csv, b"a,b\n1", None).is_err());
        assert!(decode_body(RequestMedia::Csv, b"a\n\"open", None).is_err());
        let v = decode_body(RequestMedia::FormUrlEncoded, b"name=A+B&x=%26", None).unwrap();
        assert_eq!(v, json!({"name":"A B","x":"&"}));
    }
}
