//! `GET /`: an OpenAPI 2.0 (Swagger) description of what a role may use.

use serde_json::{json, Map, Value};

use crate::schema::{Column, SchemaCache, Table};
use crate::RestConfig;

fn swagger_type(c: &Column) -> (&'static str, Option<&'static str>) {
    match c.base_type.as_str() {
        "int2" | "int4" | "int8" => (
            "integer",
            Some(if c.base_type == "int8" {
                "int64"
            } else {
                "int32"
            }),
        ),
        "float4" | "float8" | "numeric" => ("number", None),
        "bool" => ("boolean", None),
        _ if c.is_array() => ("array", None),
        _ => ("string", None),
    }
}

fn definition(t: &Table) -> Value {
    let mut props = Map::new();
    for c in &t.columns {
        let (ty, fmt) = swagger_type(c);
        let mut p = json!({ "type": ty, "format": fmt.map_or_else(|| c.data_type.clone(), str::to_string) });
        if let Some(d) = &c.default {
            p["default"] = Value::String(d.clone());
        }
        if let Some(e) = &c.enum_values {
            p["enum"] = json!(e);
        }
        if ty == "array" {
            p["items"] = json!({ "type": "string" });
        }
        let mut desc = c.comment.clone().unwrap_or_default();
        if t.primary_key.contains(&c.name) {
            desc.push_str("\n\nNote:\nThis is a Primary Key.<pk/>");
        }
        if !desc.is_empty() {
            p["description"] = Value::String(desc);
        }
        props.insert(c.name.clone(), p);
    }
    let required: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| !c.nullable && c.default.is_none() && !c.generated)
        .map(|c| c.name.as_str())
        .collect();
    let mut d = json!({ "type": "object", "properties": props });
    if !required.is_empty() {
        d["required"] = json!(required);
    }
    if let Some(c) = &t.comment {
        d["description"] = Value::String(c.clone());
    }
    d
}

/// The document for `role`: only relations and functions it holds privileges on.
pub fn openapi_document(
    cache: &SchemaCache,
    config: &RestConfig,
    schema: &str,
    role: &str,
    host: Option<&str>,
) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    paths.insert("/".into(), json!({ "get": { "produces": ["application/openapi+json", "application/json"], "responses": { "200": { "description": "OK" } }, "summary": "OpenAPI description (this document)", "tags": ["Introspection"] } }));
    for t in cache.tables.iter().filter(|t| t.schema == schema) {
        let Some(p) = t.privilege(role) else { continue };
        let mut ops = Map::new();
        let ok = json!({ "200": { "description": "OK" } });
        let tag = json!([t.name]);
        if p.select {
            ops.insert("get".into(), json!({ "tags": tag, "responses": { "200": { "description": "OK", "schema": { "type": "array", "items": { "$ref": format!("#/definitions/{}", t.name) } } }, "206": { "description": "Partial Content" } } }));
        }
        if p.insert && t.insertable {
            ops.insert(
                "post".into(),
                json!({ "tags": tag, "responses": { "201": { "description": "Created" } } }),
            );
        }
        if p.update && t.updatable {
            ops.insert(
                "patch".into(),
                json!({ "tags": tag, "responses": { "204": { "description": "No Content" } } }),
            );
        }
        if p.delete && t.deletable {
            ops.insert("delete".into(), json!({ "tags": tag, "responses": ok }));
        }
        if ops.is_empty() {
            continue;
        }
        paths.insert(format!("/{}", t.name), Value::Object(ops));
        definitions.insert(t.name.clone(), definition(t));
    }
    for f in cache
        .functions
        .iter()
        .filter(|f| f.schema == schema && f.executable_by.iter().any(|r| r == role))
    {
        let mut props = Map::new();
        let mut required = Vec::new();
        for a in f.inputs() {
            props.insert(
                a.name.clone(),
                json!({ "type": "string", "format": a.pg_type }),
            );
            if !a.has_default {
                required.push(a.name.clone());
            }
        }
        let body = json!({ "in": "body", "name": "args", "required": true, "schema": { "type": "object", "properties": props, "required": required } });
        let mut ops = json!({ "post": { "tags": ["(rpc) ".to_string() + &f.name], "parameters": [body], "produces": ["application/json"], "responses": { "200": { "description": "OK" } } } });
        if let Some(c) = &f.comment {
            ops["post"]["summary"] = Value::String(c.clone());
        }
        if f.volatility != crate::schema::Volatility::Volatile {
            ops["get"] = json!({ "tags": ["(rpc) ".to_string() + &f.name], "responses": { "200": { "description": "OK" } } });
        }
        paths.insert(format!("/rpc/{}", f.name), ops);
    }
    let _ = config;
    json!({
        "swagger": "2.0",
        "info": { "title": "agencyflow REST API", "description": "PostgREST-compatible API", "version": env!("CARGO_PKG_VERSION") },
        "host": host.unwrap_or("localhost"),
        "basePath": "/rest/v1",
        "schemes": ["http", "https"],
        "consumes": ["application/json", "application/vnd.pgrst.object+json", "text/csv"],
        "produces": ["application/json", "application/vnd.pgrst.object+json", "text/csv"],
        "paths": paths,
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::fixture;

    #[test]
    fn role_sees_only_what_it_may() {
        let c = fixture::cache();
        let cfg = RestConfig::default();
        let anon = openapi_document(&c, &cfg, "public", "anon", None);
        assert_eq!(anon["swagger"], "2.0");
        assert!(anon["paths"]["/clients"]["get"].is_object());
        assert!(anon["paths"]["/clients"]["post"].is_null());
        assert!(anon["paths"]["/invoices"].is_null());
        assert!(anon["paths"]["/rpc/bump"].is_null());
        assert!(anon["paths"]["/rpc/match_documents"]["get"].is_object());
        let auth = openapi_document(&c, &cfg, "public", "authenticated", Some("example.com"));
        assert!(auth["paths"]["/invoices"]["post"].is_object());
        assert!(auth["paths"]["/rpc/bump"]["post"].is_object());
        assert!(auth["paths"]["/rpc/bump"]["get"].is_null());
        assert_eq!(
            auth["definitions"]["clients"]["properties"]["status"]["enum"][0],
            "lead"
        );
        assert_eq!(
            auth["definitions"]["clients"]["required"],
            json!(["org_id", "name"])
        );
        let nobody = openapi_document(&c, &cfg, "public", "nobody", None);
        assert_eq!(nobody["paths"].as_object().map(|m| m.len()), Some(1));
    }
}
