//! Structured output: the JSON schemas the functions ask models for, a validator for the
//! subset of JSON Schema they use (type, properties, required, additionalProperties, items,
//! enum, minimum/maximum, minItems/maxItems, minLength/maxLength), the clean-up of a model's
//! answer before it is validated ([`normalize`]), and each provider's dialect of the schema.
//!
//! A model's answer is untrusted input, like a request body from a stranger: every string is
//! bounded (`maxLength`) and free of NUL characters (PostgreSQL cannot store them), every
//! array bounded (`maxItems`), every object closed, and arrays marked `x-unique` are
//! deduplicated.
use serde_json::{Map, Value};

/// Validates `v` against `schema`; the error names the first offending path.
pub fn validate(schema: &Value, v: &Value) -> Result<(), String> {
    check(schema, v, "$")
}

/// Cleans a model's answer up as far as `schema` describes it, before validation: strings
/// are trimmed, blank strings are dropped from arrays of strings, and arrays marked
/// `x-unique` keep only the first of items that are the same (strings compared without case
/// and with runs of whitespace collapsed; objects by the keys `x-unique` lists, or whole).
/// Anything the schema does not describe is left for [`validate`] to refuse.
pub fn normalize(schema: &Value, v: Value) -> Value {
    match v {
        Value::String(s) if schema.get("type").and_then(Value::as_str) == Some("string") => {
            let t = s.trim();
            if t.len() == s.len() {
                Value::String(s)
            } else {
                Value::String(t.to_string())
            }
        }
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            Value::Object(
                m.into_iter()
                    .map(|(k, val)| match props.and_then(|p| p.get(&k)) {
                        Some(ps) => {
                            let val = normalize(ps, val);
                            (k, val)
                        }
                        None => (k, val),
                    })
                    .collect(),
            )
        }
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            let strings = item_schema.get("type").and_then(Value::as_str) == Some("string");
            let mut out: Vec<Value> = items
                .into_iter()
                .map(|x| normalize(item_schema, x))
                .filter(|x| !(strings && x.as_str().is_some_and(str::is_empty)))
                .collect();
            if let Some(unique) = schema.get("x-unique") {
                let mut seen = std::collections::HashSet::new();
                out.retain(|x| seen.insert(identity(unique, item_schema, x)));
            }
            Value::Array(out)
        }
        other => other,
    }
}

/// What makes two items of an `x-unique` array the same. Values of an enum compare exactly
/// (`LEAD-GENERATION` is not the catalogue's `lead-generation`: it is left for validation to
/// refuse, not dropped as a duplicate of a valid item); other strings are folded.
fn identity(unique: &Value, item_schema: &Value, x: &Value) -> String {
    let key = |s: &Value, v: &Value| {
        if s.get("enum").is_some() {
            v.to_string()
        } else {
            fold(v)
        }
    };
    match (unique.as_array(), x) {
        (Some(keys), Value::Object(m)) => keys
            .iter()
            .filter_map(Value::as_str)
            .map(|k| {
                let ks = item_schema
                    .pointer(&format!("/properties/{k}"))
                    .unwrap_or(&Value::Null);
                key(ks, m.get(k).unwrap_or(&Value::Null))
            })
            .collect::<Vec<_>>()
            .join("\u{1f}"),
        _ => key(item_schema, x),
    }
}

/// A value folded for comparison: strings lower-cased with whitespace collapsed.
fn fold(v: &Value) -> String {
    match v {
        Value::String(s) => s
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
        Value::Object(m) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", fold(v))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(fold).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The folded form of a string, as `x-unique` compares them (for callers that deduplicate
/// against data of their own, e.g. existing task titles).
pub fn same_text(a: &str, b: &str) -> bool {
    fold(&Value::String(a.to_string())) == fold(&Value::String(b.to_string()))
}

fn check(s: &Value, v: &Value, path: &str) -> Result<(), String> {
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return Err(format!(
                "{path}: {v} is not one of {}",
                Value::Array(allowed.clone())
            ));
        }
    }
    let ty = s.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "object" => {
            let Some(obj) = v.as_object() else {
                return Err(format!("{path}: expected an object"));
            };
            let props = s.get("properties").and_then(Value::as_object);
            for req in s
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = req.as_str().unwrap_or_default();
                if !obj.contains_key(name) {
                    return Err(format!("{path}.{name}: missing"));
                }
            }
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => check(ps, val, &format!("{path}.{k}"))?,
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}.{k}: unexpected property"))
                    }
                    None => {}
                }
            }
        }
        "array" => {
            let Some(items) = v.as_array() else {
                return Err(format!("{path}: expected an array"));
            };
            if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    return Err(format!("{path}: needs at least {min} items"));
                }
            }
            if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    return Err(format!("{path}: at most {max} items"));
                }
            }
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(is, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        "string" => {
            let Some(text) = v.as_str() else {
                return Err(format!("{path}: expected a string"));
            };
            if text.contains('\0') {
                return Err(format!("{path}: contains a NUL character"));
            }
            let chars = text.chars().count() as u64;
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    return Err(format!("{path}: too short"));
                }
            }
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    return Err(format!("{path}: longer than {max} characters"));
                }
            }
        }
        "integer" | "number" => {
            let Some(n) = v.as_f64() else {
                return Err(format!("{path}: expected a number"));
            };
            if ty == "integer" && n.fract() != 0.0 {
                return Err(format!("{path}: expected an integer"));
            }
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                if n < min {
                    return Err(format!("{path}: {n} is below {min}"));
                }
            }
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                if n > max {
                    return Err(format!("{path}: {n} is above {max}"));
                }
            }
        }
        "boolean" if !v.is_boolean() => return Err(format!("{path}: expected a boolean")),
        _ => {}
    }
    Ok(())
}

/// Parses a model's text as JSON, tolerating a Markdown code fence around it.
pub fn parse_model_json(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|r| r.trim_end().trim_end_matches("```").trim())
        .unwrap_or(t);
    serde_json::from_str(t).map_err(|e| format!("not JSON ({e})"))
}

/// Gemini's `responseSchema` (an OpenAPI subset): upper-case types, no
/// `additionalProperties`, only the keys it knows.
pub fn to_gemini(s: &Value) -> Value {
    const KEEP: &[&str] = &[
        "type",
        "properties",
        "required",
        "items",
        "enum",
        "description",
        "nullable",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "format",
    ];
    let Some(obj) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        if !KEEP.contains(&k.as_str()) {
            continue;
        }
        let v = match k.as_str() {
            "type" => Value::String(v.as_str().unwrap_or("string").to_ascii_uppercase()),
            "properties" => Value::Object(
                v.as_object()
                    .map(|p| p.iter().map(|(n, ps)| (n.clone(), to_gemini(ps))).collect())
                    .unwrap_or_default(),
            ),
            "items" => to_gemini(v),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        // Gemini orders output properties alphabetically unless told otherwise.
        out.insert(
            "propertyOrdering".into(),
            Value::Array(props.keys().cloned().map(Value::String).collect()),
        );
    }
    Value::Object(out)
}

/// OpenAI's strict structured outputs: every object closed and every property required; the
/// numeric and length bounds are left to our own validation (not every compatible server
/// accepts them).
pub fn to_openai(s: &Value) -> Value {
    let Some(obj) = s.as_object() else {
        return s.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "minimum" | "maximum" | "minItems" | "maxItems" | "minLength" | "maxLength"
            | "x-unique" => {}
            "properties" => {
                out.insert(
                    k.clone(),
                    Value::Object(
                        v.as_object()
                            .map(|p| p.iter().map(|(n, ps)| (n.clone(), to_openai(ps))).collect())
                            .unwrap_or_default(),
                    ),
                );
            }
            "items" => {
                out.insert(k.clone(), to_openai(v));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if obj.get("type").and_then(Value::as_str) == Some("object") {
        out.insert("additionalProperties".into(), Value::Bool(false));
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            out.insert(
                "required".into(),
                Value::Array(props.keys().cloned().map(Value::String).collect()),
            );
        }
    }
    Value::Object(out)
}

/// Shorthands for writing the functions' schemas. Every string and array is bounded: a
/// model's answer is stored, so it gets the limits a request body would.
pub mod s {
    use serde_json::{json, Value};

    /// The longest text field (a summary, a description, a reason).
    pub const MAX_TEXT: u64 = 4000;
    /// The longest short field (a title, a name, a label).
    pub const MAX_LABEL: u64 = 200;
    /// The longest item of a list of strings.
    pub const MAX_ITEM: u64 = 1000;
    /// The most items of a list of strings.
    pub const MAX_ITEMS: u64 = 20;

    /// Text that may be empty.
    pub fn string() -> Value {
        json!({"type": "string", "maxLength": MAX_TEXT})
    }
    /// Non-blank text of at most [`MAX_TEXT`] characters.
    pub fn text() -> Value {
        text_up_to(MAX_TEXT)
    }
    /// Non-blank text of at most `max` characters.
    pub fn text_up_to(max: u64) -> Value {
        json!({"type": "string", "minLength": 1, "maxLength": max})
    }
    /// A non-blank title or name of at most [`MAX_LABEL`] characters.
    pub fn label() -> Value {
        text_up_to(MAX_LABEL)
    }
    /// A list of at most [`MAX_ITEMS`] distinct non-blank strings (blank ones are dropped,
    /// repeated ones kept once).
    pub fn strings() -> Value {
        json!({"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": MAX_ITEM},
               "maxItems": MAX_ITEMS, "x-unique": true})
    }
    pub fn one_of(values: &[&str]) -> Value {
        json!({"type": "string", "enum": values})
    }
    pub fn int_range(min: i64, max: i64) -> Value {
        json!({"type": "integer", "minimum": min, "maximum": max})
    }
    pub fn number() -> Value {
        json!({"type": "number"})
    }
    pub fn number_range(min: f64, max: f64) -> Value {
        json!({"type": "number", "minimum": min, "maximum": max})
    }
    pub fn array(items: Value, min: u64, max: u64) -> Value {
        json!({"type": "array", "items": items, "minItems": min, "maxItems": max})
    }
    /// [`array`] whose items are deduplicated: strings as in [`strings`], objects by `keys`
    /// (the first of items with the same values of `keys` is kept).
    pub fn unique_array(items: Value, min: u64, max: u64, keys: &[&str]) -> Value {
        let mut a = array(items, min, max);
        a["x-unique"] = if keys.is_empty() {
            json!(true)
        } else {
            json!(keys)
        };
        a
    }
    /// A closed object whose every property is required.
    pub fn object(props: &[(&str, Value)]) -> Value {
        let properties: serde_json::Map<String, Value> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let required: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
        json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        s::object(&[
            ("score", s::int_range(0, 100)),
            ("level", s::one_of(&["low", "high"])),
            ("items", s::array(s::text(), 1, 3)),
        ])
    }

    #[test]
    fn accepts_valid_and_names_the_bad_path() {
        let sc = schema();
        assert!(validate(&sc, &json!({"score": 5, "level": "low", "items": ["a"]})).is_ok());
        let e = validate(&sc, &json!({"score": 500, "level": "low", "items": ["a"]})).unwrap_err();
        assert!(e.starts_with("$.score"), "{e}");
        let e = validate(&sc, &json!({"score": 5, "level": "mid", "items": ["a"]})).unwrap_err();
        assert!(e.starts_with("$.level"), "{e}");
        let e = validate(&sc, &json!({"score": 5, "level": "low", "items": []})).unwrap_err();
        assert!(e.contains("at least"), "{e}");
        let e = validate(&sc, &json!({"score": 5, "level": "low"})).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        let e = validate(&sc, &json!({"score": 5.5, "level": "low", "items": ["a"]})).unwrap_err();
        assert!(e.contains("integer"), "{e}");
        assert!(validate(&sc, &json!("nope")).is_err());
    }

    #[test]
    fn normalize_trims_drops_blanks_and_deduplicates() {
        let sc = s::object(&[
            ("tags", s::strings()),
            (
                "recs",
                s::unique_array(
                    s::object(&[("id", s::label()), ("why", s::text())]),
                    1,
                    5,
                    &["id"],
                ),
            ),
        ]);
        let v = normalize(
            &sc,
            json!({"tags": [" a ", "", "A", "b  c", "B C", "  "],
                   "recs": [{"id": "x", "why": " first "}, {"id": " X ", "why": "second"}, {"id": "y", "why": "third"}]}),
        );
        assert_eq!(
            v,
            json!({"tags": ["a", "b  c"], "recs": [{"id": "x", "why": "first"}, {"id": "y", "why": "third"}]})
        );
        assert!(validate(&sc, &v).is_ok());
        // Everything blank: the minimum refuses it.
        let v = normalize(&sc, json!({"tags": [], "recs": []}));
        assert!(validate(&sc, &v).unwrap_err().contains("at least"));
        assert!(same_text(" Export  CRM", "export crm"));
        // Enum values compare exactly: a wrong-case id is not dropped as a duplicate of a
        // valid one, it stays for validation to refuse.
        let sc = s::unique_array(
            s::object(&[("system_id", s::one_of(&["lead-generation"]))]),
            1,
            5,
            &["system_id"],
        );
        let v = normalize(
            &sc,
            json!([{"system_id": "lead-generation"}, {"system_id": " lead-generation"}, {"system_id": "LEAD-GENERATION"}]),
        );
        assert_eq!(
            v,
            json!([{"system_id": "lead-generation"}, {"system_id": "LEAD-GENERATION"}])
        );
        assert!(validate(&sc, &v).is_err());
    }

    #[test]
    fn strings_are_bounded_and_free_of_nul() {
        let sc = s::object(&[("t", s::label()), ("l", s::strings())]);
        let max = "x".repeat(s::MAX_LABEL as usize);
        assert!(validate(&sc, &json!({"t": max, "l": []})).is_ok());
        let e = validate(&sc, &json!({"t": format!("{max}x"), "l": []})).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let e = validate(&sc, &json!({"t": "a\u{0}b", "l": []})).unwrap_err();
        assert!(e.contains("NUL"), "{e}");
        let many: Vec<String> = (0..=s::MAX_ITEMS).map(|i| i.to_string()).collect();
        let e = validate(&sc, &json!({"t": "a", "l": many})).unwrap_err();
        assert!(e.contains("at most"), "{e}");
        // The providers' dialects do not carry our own keywords.
        let o = to_openai(&sc);
        assert!(o["properties"]["l"].get("x-unique").is_none());
        assert!(o["properties"]["t"].get("maxLength").is_none());
        assert!(to_gemini(&sc)["properties"]["l"].get("x-unique").is_none());
    }

    #[test]
    fn parses_fenced_json() {
        assert_eq!(
            parse_model_json("```json\n{\"a\":1}\n```").unwrap(),
            json!({"a": 1})
        );
        assert_eq!(parse_model_json(" {\"a\":1} ").unwrap(), json!({"a": 1}));
        assert!(parse_model_json("sure! here it is").is_err());
    }

    #[test]
    fn dialects() {
        let g = to_gemini(&schema());
        assert_eq!(g["type"], "OBJECT");
        assert_eq!(g["properties"]["score"]["type"], "INTEGER");
        assert!(g.get("additionalProperties").is_none());
        let o = to_openai(&schema());
        assert_eq!(o["additionalProperties"], false);
        assert!(o["properties"]["score"].get("minimum").is_none());
        assert_eq!(o["required"].as_array().unwrap().len(), 3);
    }
}
