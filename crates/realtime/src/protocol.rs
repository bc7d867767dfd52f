//! The Phoenix channels wire as realtime-js 2.109 speaks it: serializer 1.0.0 (JSON objects),
//! 2.0.0 (JSON arrays), and 2.0.0's binary user-broadcast frames (kind 3 from the client,
//! kind 4 to it).
use axum::extract::ws::Message;
use bytes::Bytes;
use serde_json::{json, Value};

/// The serializer a socket asked for (`?vsn=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vsn {
    V1 = 0,
    V2 = 1,
}

impl Vsn {
    pub fn parse(s: Option<&str>) -> Result<Vsn, String> {
        match s {
            None | Some("1.0.0") => Ok(Vsn::V1),
            Some("2.0.0") => Ok(Vsn::V2),
            Some(other) => Err(format!("unsupported serializer version {other}")),
        }
    }
}

/// A user broadcast's payload: JSON, or bytes (binary frames with encoding 0).
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastPayload {
    Json(Value),
    Binary(Bytes),
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub join_ref: Option<String>,
    pub msg_ref: Option<String>,
    pub topic: String,
    pub event: String,
    pub payload: Value,
    /// Set for a binary user broadcast (kind 3): `payload` then holds `{type, event}` only.
    pub binary: Option<(String, BroadcastPayload)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not valid JSON: {0}")]
    Json(String),
    #[error("malformed message: {0}")]
    Shape(&'static str),
}

fn opt_ref(v: &Value) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(DecodeError::Shape("ref and join_ref must be strings")),
    }
}

fn string(v: &Value, what: &'static str) -> Result<String, DecodeError> {
    v.as_str()
        .map(str::to_string)
        .ok_or(DecodeError::Shape(what))
}

/// Decodes a text frame: a JSON array (2.0.0) or object (1.0.0). Either shape is accepted on
/// either serializer, as realtime-js's own fallbacks do.
pub fn decode_text(text: &str) -> Result<Incoming, DecodeError> {
    let v: Value = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    match v {
        Value::Array(a) => {
            if a.len() != 5 {
                return Err(DecodeError::Shape(
                    "expected [join_ref, ref, topic, event, payload]",
                ));
            }
            let mut it = a.into_iter();
            let join_ref = opt_ref(&it.next().unwrap_or_default())?;
            let msg_ref = opt_ref(&it.next().unwrap_or_default())?;
            let topic = string(&it.next().unwrap_or_default(), "topic must be a string")?;
            let event = string(&it.next().unwrap_or_default(), "event must be a string")?;
            let payload = it.next().unwrap_or_default();
            Ok(Incoming {
                join_ref,
                msg_ref,
                topic,
                event,
                payload,
                binary: None,
            })
        }
        Value::Object(mut o) => {
            let join_ref = opt_ref(o.get("join_ref").unwrap_or(&Value::Null))?;
            let msg_ref = opt_ref(o.get("ref").unwrap_or(&Value::Null))?;
            let topic = string(
                o.get("topic").unwrap_or(&Value::Null),
                "topic must be a string",
            )?;
            let event = string(
                o.get("event").unwrap_or(&Value::Null),
                "event must be a string",
            )?;
            let payload = o.remove("payload").unwrap_or(Value::Null);
            Ok(Incoming {
                join_ref,
                msg_ref,
                topic,
                event,
                payload,
                binary: None,
            })
        }
        _ => Err(DecodeError::Shape("expected a JSON array or object")),
    }
}

const KIND_PUSH: u8 = 3;
const KIND_BROADCAST: u8 = 4;
const ENC_BINARY: u8 = 0;
const ENC_JSON: u8 = 1;

/// Decodes a binary frame: only the user-broadcast push (kind 3) exists.
/// Layout: kind, len(join_ref), len(ref), len(topic), len(event), len(metadata), encoding,
/// then those strings, then the payload.
pub fn decode_binary(b: &[u8]) -> Result<Incoming, DecodeError> {
    if b.len() < 7 {
        return Err(DecodeError::Shape("binary frame too short"));
    }
    if b[0] != KIND_PUSH {
        return Err(DecodeError::Shape("unknown binary frame kind"));
    }
    let lens = [b[1], b[2], b[3], b[4], b[5]].map(usize::from);
    let encoding = b[6];
    let mut off = 7;
    let mut parts = Vec::with_capacity(5);
    for len in lens {
        let end = off + len;
        let s = b.get(off..end).ok_or(DecodeError::Shape(
            "binary frame shorter than its header says",
        ))?;
        parts.push(
            std::str::from_utf8(s)
                .map_err(|_| DecodeError::Shape("binary frame strings must be UTF-8"))?
                .to_string(),
        );
        off = end;
    }
    let rest = &b[off..];
    let payload = match encoding {
        ENC_JSON => BroadcastPayload::Json(
            serde_json::from_slice(rest).map_err(|e| DecodeError::Json(e.to_string()))?,
        ),
        ENC_BINARY => BroadcastPayload::Binary(Bytes::copy_from_slice(rest)),
        _ => return Err(DecodeError::Shape("unknown payload encoding")),
    };
    let meta = &parts[4];
    let mut header = json!({"type": "broadcast", "event": parts[3]});
    if !meta.is_empty() {
        let m: Value = serde_json::from_str(meta).map_err(|e| DecodeError::Json(e.to_string()))?;
        if let Value::Object(m) = m {
            for (k, v) in m {
                header[k] = v;
            }
        }
    }
    Ok(Incoming {
        join_ref: Some(parts[0].clone()).filter(|s| !s.is_empty()),
        msg_ref: Some(parts[1].clone()).filter(|s| !s.is_empty()),
        topic: parts[2].clone(),
        event: "broadcast".into(),
        payload: header,
        binary: Some((parts[3].clone(), payload)),
    })
}

/// A JSON message to the client in the socket's serializer.
pub fn encode(
    vsn: Vsn,
    join_ref: Option<&str>,
    msg_ref: Option<&str>,
    topic: &str,
    event: &str,
    payload: &Value,
) -> Message {
    let text = match vsn {
        Vsn::V2 => json!([join_ref, msg_ref, topic, event, payload]).to_string(),
        Vsn::V1 => json!({"join_ref": join_ref, "ref": msg_ref, "topic": topic, "event": event, "payload": payload}).to_string(),
    };
    Message::Text(text.into())
}

/// A user broadcast to the client: a kind-4 binary frame on 2.0.0 (JSON or binary payload),
/// `{type: "broadcast", event, payload}` as JSON on 1.0.0. `None` when the socket's serializer
/// cannot carry it (binary payload on 1.0.0).
pub fn encode_broadcast(
    vsn: Vsn,
    topic: &str,
    event: &str,
    payload: &BroadcastPayload,
) -> Option<Message> {
    let fits = topic.len() <= 255 && event.len() <= 255;
    match (vsn, payload) {
        (Vsn::V2, _) if fits => {
            let (enc, body): (u8, Vec<u8>) = match payload {
                BroadcastPayload::Json(v) => (ENC_JSON, serde_json::to_vec(v).unwrap_or_default()),
                BroadcastPayload::Binary(b) => (ENC_BINARY, b.to_vec()),
            };
            let mut out = Vec::with_capacity(5 + topic.len() + event.len() + body.len());
            out.extend_from_slice(&[KIND_BROADCAST, topic.len() as u8, event.len() as u8, 0, enc]);
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(event.as_bytes());
            out.extend_from_slice(&body);
            Some(Message::Binary(out.into()))
        }
        (_, BroadcastPayload::Json(v)) => Some(encode(
            vsn,
            None,
            None,
            topic,
            "broadcast",
            &json!({"type": "broadcast", "event": event, "payload": v}),
        )),
        (_, BroadcastPayload::Binary(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_text_shapes() {
        let a = decode_text(r#"["1","2","realtime:x","phx_join",{"a":1}]"#).unwrap();
        let o = decode_text(
            r#"{"join_ref":"1","ref":"2","topic":"realtime:x","event":"phx_join","payload":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(a, o);
        assert_eq!(a.payload["a"], 1);
        assert!(decode_text("[1,2]").is_err());
        assert!(decode_text("nope").is_err());
        assert!(decode_text(r#"[null,null,5,"e",{}]"#).is_err());
    }

    #[test]
    fn binary_push_roundtrip() {
        // As realtime-js's serializer builds it: join_ref "1", ref "3", topic, event, no meta, JSON.
        let topic = "realtime:room";
        let mut f = vec![3u8, 1, 1, topic.len() as u8, 5, 0, 1];
        f.extend_from_slice(b"13");
        f.extend_from_slice(topic.as_bytes());
        f.extend_from_slice(b"hello");
        f.extend_from_slice(br#"{"x":1}"#);
        let m = decode_binary(&f).unwrap();
        assert_eq!(m.topic, topic);
        assert_eq!(m.msg_ref.as_deref(), Some("3"));
        assert_eq!(
            m.binary,
            Some(("hello".into(), BroadcastPayload::Json(json!({"x": 1}))))
        );
        assert!(decode_binary(&f[..10]).is_err());
        let Some(Message::Binary(out)) = encode_broadcast(
            Vsn::V2,
            topic,
            "hello",
            &BroadcastPayload::Binary(Bytes::from_static(b"\x00\x01")),
        ) else {
            panic!("binary")
        };
        assert_eq!(out[0], 4);
        assert_eq!(&out[out.len() - 2..], b"\x00\x01");
        assert!(
            encode_broadcast(Vsn::V1, topic, "e", &BroadcastPayload::Binary(Bytes::new()))
                .is_none()
        );
    }
}
