//! Function calls: overload resolution, argument binding and result shape.

use serde_json::Value;

use super::errors::closest;
use super::read::{apply_paging, build_root, root_paging, Ctx, RootOpts};
use super::{CallArg, CallQuery, CallShape, FunctionCall, Source};
use crate::error::{ErrorKind, RestError};
use crate::parse::filter::parse_filter;
use crate::parse::{CountPref, PathFilter};
use crate::schema::{
    ArgMode, Column, Function, FunctionArg, RelationKind, ReturnShape, Table, Volatility,
};

pub(crate) struct PlannedCall {
    pub query: CallQuery,
    pub offset: i64,
    pub volatile: bool,
    pub raw_media: Option<super::RawMedia>,
}

/// The media types PostgREST always produces (besides a function's own); GeoJSON when the
/// database has PostGIS (`geojson`).
fn builtin_media(essence: &str, geojson: bool) -> bool {
    (geojson && essence == "application/geo+json")
        || matches!(
            essence,
            "*/*"
                | "application/*"
                | "application/json"
                | "application/vnd.pgrst.array+json"
                | "application/vnd.pgrst.object+json"
                | "application/vnd.pgrst.object"
                | "text/csv"
        )
}

/// A function returning a media type domain handles the first accepted type that is its
/// own (any type for `*/*`), with the default `select` and a single value only.
fn media_handler(
    req: &crate::parse::ApiRequest,
    f: &Function,
    shape: CallShape,
    geojson: bool,
) -> Option<super::RawMedia> {
    let mt = f.return_media_type.as_deref()?;
    let default_select = match &req.select {
        None => true,
        Some(items) => matches!(items.as_slice(), [] | [crate::parse::SelectItem::Star]),
    };
    if shape != CallShape::Scalar || !default_select {
        return None;
    }
    let raw = |content_type: &str| super::RawMedia {
        content_type: match content_type {
            "text/plain" | "text/xml" | "text/csv" => format!("{content_type}; charset=utf-8"),
            other => other.to_string(),
        },
        bytes: f.return_base_type == "bytea",
    };
    if mt == "*/*" {
        return Some(raw("application/octet-stream"));
    }
    for (essence, _) in &req.accept_types {
        if essence.eq_ignore_ascii_case(mt) {
            return Some(raw(mt));
        }
        if builtin_media(essence, geojson) {
            return None;
        }
    }
    None
}

fn is_json_arg(a: &FunctionArg) -> bool {
    matches!(a.base_type.as_str(), "json" | "jsonb")
}

/// How a POST body reaches a function with a single unnamed parameter (PostgREST's
/// `hasSingleUnnamedParam`): by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// No body (GET/HEAD): arguments come from the query string.
    None,
    Json,
    Text,
    Xml,
    Bytes,
    /// Form-urlencoded: named arguments only.
    Form,
}

impl BodyKind {
    fn of(req: &crate::parse::ApiRequest) -> Self {
        use crate::parse::RequestMedia;
        if req.method.is_read() {
            return BodyKind::None;
        }
        match req.content_type {
            RequestMedia::TextPlain => BodyKind::Text,
            RequestMedia::Xml => BodyKind::Xml,
            RequestMedia::OctetStream => BodyKind::Bytes,
            RequestMedia::FormUrlEncoded => BodyKind::Form,
            RequestMedia::Json | RequestMedia::Csv | RequestMedia::Other => BodyKind::Json,
        }
    }

    /// The type of the single unnamed parameter this body can be the argument of.
    fn takes(self, a: &FunctionArg) -> bool {
        match self {
            BodyKind::Json => is_json_arg(a),
            BodyKind::Text => a.base_type == "text",
            BodyKind::Xml => a.base_type == "xml",
            BodyKind::Bytes => a.base_type == "bytea",
            BodyKind::None | BodyKind::Form => false,
        }
    }

    /// A raw body (text, xml, bytes) is only ever one argument: PGRST202 names no keys.
    fn only_single(self) -> bool {
        matches!(self, BodyKind::Text | BodyKind::Xml | BodyKind::Bytes)
    }
}

/// PostgREST's `matchesParams`: the argument keys name every required parameter and
/// otherwise only optional ones; a function without parameters takes no keys (and no raw body).
fn matches_params(f: &Function, keys: &[String], kind: BodyKind) -> bool {
    let inputs: Vec<&FunctionArg> = f.inputs().collect();
    if inputs.is_empty() {
        return keys.is_empty() && !kind.only_single();
    }
    if inputs.iter().any(|a| a.name.is_empty()) {
        return false;
    }
    let required: Vec<&str> = inputs
        .iter()
        .filter(|a| !a.has_default)
        .map(|a| a.name.as_str())
        .collect();
    required.iter().all(|r| keys.iter().any(|k| k == r))
        && keys.iter().all(|k| inputs.iter().any(|a| &a.name == k))
}

/// The candidates for a call: functions whose parameters the keys match, else those whose
/// single unnamed parameter takes the body (`params=single-object`: a single json parameter).
fn candidates<'a>(
    overloads: &[&'a Function],
    keys: &[String],
    kind: BodyKind,
    single_object: bool,
) -> Vec<&'a Function> {
    let single = |f: &&Function| {
        let inputs: Vec<&FunctionArg> = f.inputs().collect();
        match inputs.as_slice() {
            [a] if single_object => is_json_arg(a),
            [a] => a.name.is_empty() && kind.takes(a),
            _ => false,
        }
    };
    if single_object && kind == BodyKind::Json {
        return overloads.iter().copied().filter(single).collect();
    }
    let named: Vec<&Function> = overloads
        .iter()
        .copied()
        .filter(|f| matches_params(f, keys, kind))
        .collect();
    if !named.is_empty() {
        return named;
    }
    overloads.iter().copied().filter(single).collect()
}

/// The object keys of a JSON or form body, sorted (`columns=` overrides them on a call).
fn body_keys(req: &crate::parse::ApiRequest, body: Option<&Value>) -> Vec<String> {
    let mut keys: Vec<String> = match (&req.columns, body) {
        (Some(cols), _) => cols.clone(),
        (None, Some(Value::Object(o))) => o.keys().cloned().collect(),
        _ => Vec::new(),
    };
    keys.sort();
    keys.dedup();
    keys
}

pub(crate) fn plan_call(ctx: &mut Ctx, name: &str) -> Result<PlannedCall, RestError> {
    let req = ctx.req;
    let schema = req.schema.as_str();
    let overloads: Vec<&Function> = ctx.cache.functions_named(schema, name).collect();
    let empty = Value::Object(Default::default());
    let single_object = req.prefer.params_single_object;

    // GET/HEAD: a pair is an argument unless its key is an embed path or its value an
    // operator expression (then it filters the result).
    let mut query_args: Vec<(&str, &str)> = Vec::new();
    let mut result_filters: Vec<(&str, &str)> = Vec::new();
    for (k, v) in &req.rpc_query {
        if k.contains('.') || crate::parse::filter::looks_like_filter(v) {
            result_filters.push((k, v));
        } else {
            query_args.push((k, v));
        }
    }

    let mut kind = BodyKind::of(req);
    let mut body = req.payload.as_ref();
    let mut keys: Vec<String> = match kind {
        BodyKind::None => {
            let mut k: Vec<String> = query_args.iter().map(|(k, _)| k.to_string()).collect();
            k.sort();
            k.dedup();
            k
        }
        BodyKind::Json | BodyKind::Form => body_keys(req, body),
        BodyKind::Text | BodyKind::Xml | BodyKind::Bytes => Vec::new(),
    };
    if kind == BodyKind::Json && body.is_none() {
        body = Some(&empty);
    }
    let mut chosen = candidates(&overloads, &keys, kind, single_object);
    // A JSON body sent as text/plain (clients that forget the Content-Type) still calls a
    // function with named parameters when no function takes the text itself.
    if chosen.is_empty() && kind == BodyKind::Text {
        let text_body = req.raw_body.as_deref().unwrap_or_default();
        let json = match req.payload.as_ref() {
            Some(v @ Value::Object(_)) => Some(v),
            None if text_body.iter().all(u8::is_ascii_whitespace) => Some(&empty),
            _ => None,
        };
        if let Some(json) = json {
            let json_keys = body_keys(req, Some(json));
            let retry = candidates(&overloads, &json_keys, BodyKind::Json, single_object);
            if !retry.is_empty() {
                kind = BodyKind::Json;
                body = Some(json);
                keys = json_keys;
                chosen = retry;
            }
        }
    }
    let function = match chosen.as_slice() {
        [] => {
            return Err(not_found(
                ctx,
                schema,
                name,
                &keys,
                kind,
                single_object,
                &overloads,
            ))
        }
        [one] => *one,
        many => return Err(ambiguous(schema, name, many)),
    };

    let mut args = Vec::new();
    let inputs: Vec<&FunctionArg> = function.inputs().collect();
    let whole_body = inputs.len() == 1
        && kind != BodyKind::None
        && kind != BodyKind::Form
        && (inputs[0].name.is_empty() || (single_object && is_json_arg(inputs[0])));
    if whole_body {
        let a = inputs[0];
        let raw = req.raw_body.as_deref().unwrap_or_default();
        let value = match kind {
            BodyKind::Json => body.unwrap_or(&empty).to_string(),
            BodyKind::Bytes => bytea_hex(raw),
            _ => String::from_utf8_lossy(raw).into_owned(),
        };
        args.push(if a.name.is_empty() {
            CallArg::Positional {
                pg_type: a.call_type().to_string(),
                value,
            }
        } else {
            CallArg::Named {
                name: a.name.clone(),
                pg_type: a.call_type().to_string(),
                value: Some(value),
                variadic: false,
            }
        });
    } else if kind == BodyKind::None {
        for a in &inputs {
            let values: Vec<&str> = query_args
                .iter()
                .filter(|(k, _)| *k == a.name)
                .map(|(_, v)| *v)
                .collect();
            if values.is_empty() {
                continue;
            }
            let is_array = a.category == "A";
            let value = if is_array && !(values.len() == 1 && values[0].starts_with('{')) {
                pg_array_literal(
                    &values
                        .iter()
                        .map(|v| Value::String(v.to_string()))
                        .collect::<Vec<_>>(),
                )
            } else {
                values[0].to_string()
            };
            args.push(CallArg::Named {
                name: a.name.clone(),
                pg_type: a.call_type().to_string(),
                value: Some(value),
                variadic: a.mode == ArgMode::Variadic,
            });
        }
    } else if let Some(Value::Object(o)) = body {
        for a in &inputs {
            if !keys.contains(&a.name) {
                continue;
            }
            // With `columns=`, a listed key missing from the body is NULL.
            let v = o.get(&a.name).unwrap_or(&Value::Null);
            args.push(CallArg::Named {
                name: a.name.clone(),
                pg_type: a.call_type().to_string(),
                value: json_to_param(v, a.category == "A"),
                variadic: a.mode == ArgMode::Variadic,
            });
        }
    }

    let call = FunctionCall {
        function: crate::schema::QualifiedName::new(&function.schema, &function.name),
        args,
    };
    let shape = match (function.shape(), function.returns_set) {
        (ReturnShape::Void, _) => CallShape::Void,
        (ReturnShape::Scalar, false) => CallShape::Scalar,
        (ReturnShape::Scalar, true) => CallShape::SetOfScalars,
        (ReturnShape::Composite, false) => CallShape::SingleRow,
        (ReturnShape::Composite, true) => CallShape::Rows,
    };
    let count_exact = matches!(
        req.prefer.count,
        Some(CountPref::Exact | CountPref::Estimated)
    );
    let mut query = CallQuery {
        call: call.clone(),
        shape,
        root: None,
        limit: None,
        offset: None,
        count_exact,
    };
    let mut offset = 0;
    match shape {
        CallShape::Rows | CallShape::SingleRow => {
            let synthetic;
            let table: &Table = match function
                .return_relation
                .as_ref()
                .and_then(|r| ctx.cache.table_by_name(r))
            {
                Some(t) => t,
                None => {
                    synthetic = result_table(function);
                    &synthetic
                }
            };
            let mut extra = Vec::new();
            for (k, v) in &result_filters {
                let (path, filter) = parse_filter(k, v)?;
                extra.push(PathFilter { path, filter });
            }
            let mut root = build_root(
                ctx,
                table,
                Source::Function(call),
                &extra,
                RootOpts {
                    filters: true,
                    order: true,
                },
            )?;
            if shape == CallShape::Rows {
                offset = apply_paging(ctx, &mut root);
            }
            query.root = Some(root);
        }
        CallShape::SetOfScalars => {
            let (o, l) = root_paging(ctx);
            offset = o;
            query.offset = (o > 0).then_some(o);
            query.limit = l;
        }
        CallShape::Scalar | CallShape::Void => {}
    }
    Ok(PlannedCall {
        raw_media: media_handler(req, function, shape, ctx.cache.geojson_function.is_some()),
        query,
        offset,
        volatile: function.volatility == Volatility::Volatile,
    })
}

/// The columns of a `TABLE(...)`/OUT-parameter result as a relation.
fn result_table(f: &Function) -> Table {
    Table {
        schema: f.schema.clone(),
        name: f.name.clone(),
        kind: RelationKind::View,
        comment: None,
        insertable: false,
        updatable: false,
        deletable: false,
        columns: f
            .output_args()
            .enumerate()
            .map(|(i, a)| Column {
                name: a.name.clone(),
                pg_type: a.pg_type.clone(),
                cast_type: a.call_type().to_string(),
                data_type: a.pg_type.clone(),
                base_type: a.base_type.clone(),
                category: a.category.clone(),
                nullable: true,
                default: None,
                generated: false,
                position: i as i32 + 1,
                comment: None,
                enum_values: None,
                enum_comment: None,
            })
            .collect(),
        privileges: Vec::new(),
        primary_key: Vec::new(),
    }
}

/// A JSON argument as the text a `$n::type` cast accepts. Vectors (`[0.1,0.2]`)
/// pass as JSON text, which is pgvector's text input; PostgreSQL arrays need `{}`.
pub(crate) fn json_to_param(v: &Value, pg_array: bool) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if pg_array => Some(pg_array_literal(items)),
        other => Some(other.to_string()),
    }
}

pub(crate) fn pg_array_literal(items: &[Value]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            Value::Array(inner) => out.push_str(&pg_array_literal(inner)),
            Value::String(s) => quote_element(&mut out, s),
            other => quote_element(&mut out, &other.to_string()),
        }
    }
    out.push('}');
    out
}

fn quote_element(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `\x…`: bytes as bytea's hex text input.
fn bytea_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// PGRST202, worded as PostgREST v12 words it for this kind of call.
fn not_found(
    ctx: &Ctx,
    schema: &str,
    name: &str,
    keys: &[String],
    kind: BodyKind,
    single_object: bool,
    overloads: &[&Function],
) -> RestError {
    let list = keys.join(", ");
    let only_single = single_object || kind.only_single();
    let with_keys = if keys.is_empty() {
        " without parameters".to_string()
    } else {
        format!(
            " with parameter{} {list}",
            if keys.len() > 1 { "s" } else { "" }
        )
    };
    let searched = match kind {
        _ if single_object => " with a single json/jsonb parameter".to_string(),
        BodyKind::Text => " with a single unnamed text parameter".to_string(),
        BodyKind::Xml => " with a single unnamed xml parameter".to_string(),
        BodyKind::Bytes => " with a single unnamed bytea parameter".to_string(),
        BodyKind::Json => format!("{with_keys} or with a single unnamed json/jsonb parameter"),
        BodyKind::None | BodyKind::Form => with_keys,
    };
    let spelled = if only_single {
        String::new()
    } else if keys.is_empty() {
        " without parameters".to_string()
    } else {
        format!("({list})")
    };
    let mut e = RestError::new(
        ErrorKind::FunctionNotFound,
        format!("Could not find the function {schema}.{name}{spelled} in the schema cache"),
    )
    .with_details(format!(
        "Searched for the function {schema}.{name}{searched}, but no matches were found in the schema cache."
    ));
    if only_single {
        return e;
    }
    // The function exists: suggest the closest parameter list; else the closest name.
    let suggestion = if overloads.is_empty() {
        let names = ctx
            .cache
            .functions
            .iter()
            .filter(|f| f.schema == schema && f.name != name)
            .map(|f| f.name.as_str());
        closest(name, names).map(str::to_string)
    } else {
        closest_parameters(keys, overloads).map(|l| format!("{name}{l}"))
    };
    if let Some(c) = suggestion {
        e = e.with_hint(format!(
            "Perhaps you meant to call the function {schema}.{c}"
        ));
    }
    e
}

/// The parameter list `(a, b)` of the overload whose names are closest to the keys given:
/// each key counts by its similarity to the nearest parameter name, when at least half alike.
fn closest_parameters(keys: &[String], overloads: &[&Function]) -> Option<String> {
    let similarity = |a: &str, b: &str| {
        let longest = a.chars().count().max(b.chars().count()).max(1);
        1.0 - super::errors::levenshtein(a, b) as f64 / longest as f64
    };
    let mut best: Option<(f64, String)> = None;
    for f in overloads {
        let mut names: Vec<&str> = f.inputs().map(|a| a.name.as_str()).collect();
        names.sort();
        let score: f64 = keys
            .iter()
            .map(|k| names.iter().map(|n| similarity(k, n)).fold(0.0, f64::max))
            .filter(|s| *s >= 0.5)
            .sum();
        let list = format!("({})", names.join(", "));
        let better = match &best {
            None => score > 0.0 || keys.is_empty(),
            Some((b, _)) => score > *b,
        };
        if better {
            best = Some((score, list));
        }
    }
    best.map(|(_, l)| l)
}

/// PGRST203: the candidates in PostgREST's order (by description, then parameters).
fn ambiguous(schema: &str, name: &str, many: &[&Function]) -> RestError {
    let mut sorted: Vec<&Function> = many.to_vec();
    let params = |f: &Function| -> Vec<(String, String)> {
        f.inputs()
            .map(|a| (a.name.clone(), a.pg_type.clone()))
            .collect()
    };
    sorted
        .sort_by(|a, b| (a.comment.as_deref(), params(a)).cmp(&(b.comment.as_deref(), params(b))));
    let sigs: Vec<String> = sorted
        .iter()
        .map(|f| {
            let args: Vec<String> = f
                .inputs()
                .map(|a| format!("{} => {}", a.name, a.pg_type))
                .collect();
            format!("{schema}.{name}({})", args.join(", "))
        })
        .collect();
    RestError::new(
        ErrorKind::AmbiguousFunction,
        format!(
            "Could not choose the best candidate function between: {}",
            sigs.join(", ")
        ),
    )
    .with_hint("Try renaming the parameters or the function itself in the database so function overloading can be resolved")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn array_literals() {
        assert_eq!(
            pg_array_literal(&[json!("a"), json!("b,c")]),
            "{\"a\",\"b,c\"}"
        );
        assert_eq!(
            pg_array_literal(&[json!(1), json!(null), json!("q\"\\")]),
            "{\"1\",NULL,\"q\\\"\\\\\"}"
        );
        assert_eq!(
            pg_array_literal(&[json!([1, 2]), json!([3])]),
            "{{\"1\",\"2\"},{\"3\"}}"
        );
        assert_eq!(pg_array_literal(&[]), "{}");
    }

    #[test]
    fn params_from_json() {
        assert_eq!(
            json_to_param(&json!([0.1, 0.2]), false).as_deref(),
            Some("[0.1,0.2]")
        );
        assert_eq!(
            json_to_param(&json!(["a"]), true).as_deref(),
            Some("{\"a\"}")
        );
        assert_eq!(json_to_param(&json!("x"), false).as_deref(), Some("x"));
        assert_eq!(json_to_param(&json!(null), false), None);
        assert_eq!(
            json_to_param(&json!({"a": 1}), false).as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(json_to_param(&json!(true), false).as_deref(), Some("true"));
    }
}
