//! Structured output: the JSON schemas the functions ask models for, a validator for the
//! subset of JSON Schema they use (type, properties, required, additionalProperties, items,
//! enum, minimum/maximum, minItems/maxItems, minLength), and each provider's dialect of it.
use serde_json::{Map, Value};

/// Validates `v` against `schema`; the error names the first offending path.
pub fn validate(schema: &Value, v: &Value) -> Result<(), String> {
    check(schema, v, "$")
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
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if (text.chars().count() as u64) < min {
                    return Err(format!("{path}: too short"));
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
            "minimum" | "maximum" | "minItems" | "maxItems" | "minLength" => {}
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

/// Shorthands for writing the functions' schemas.
pub mod s {
    use serde_json::{json, Value};

    pub fn string() -> Value {
        json!({"type": "string"})
    }
    pub fn text() -> Value {
        json!({"type": "string", "minLength": 1})
    }
    pub fn strings() -> Value {
        json!({"type": "array", "items": {"type": "string"}})
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
    pub fn array(items: Value, min: u64, max: u64) -> Value {
        json!({"type": "array", "items": items, "minItems": min, "maxItems": max})
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
