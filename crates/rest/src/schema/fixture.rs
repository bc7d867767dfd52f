//! The test fixture: `fixture.json` is the real output of `SCHEMA_CACHE_SQL`
//! over `tests/sql/fixture.sql` (an agency-like schema) on PostgreSQL 15.

use super::SchemaCache;

pub(crate) fn cache() -> SchemaCache {
    let value: serde_json::Value =
        serde_json::from_str(include_str!("fixture.json")).expect("fixture json");
    SchemaCache::from_json(value).expect("fixture cache")
}
