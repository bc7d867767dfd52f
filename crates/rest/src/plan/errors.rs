//! Planner errors worded as PostgREST v12 / PostgreSQL word them.

use crate::error::{ErrorKind, RestError};
use crate::schema::{QualifiedName, Relationship};

pub fn relation_not_found(schema: &str, name: &str) -> RestError {
    let mut e = RestError::postgres(
        "42P01",
        format!("relation \"{schema}.{name}\" does not exist"),
    );
    e.status = http::StatusCode::NOT_FOUND;
    e
}

pub(crate) fn column_not_found(table: &str, column: &str) -> RestError {
    RestError::postgres("42703", format!("column {table}.{column} does not exist"))
}

pub(crate) fn payload_column_not_found(table: &str, column: &str) -> RestError {
    RestError::new(
        ErrorKind::ColumnNotFound,
        format!("Could not find the '{column}' column of '{table}' in the schema cache"),
    )
}

pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate, if close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    wanted: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wanted.chars().count() / 3).max(2);
    candidates
        .map(|c| (levenshtein(wanted, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

pub(crate) fn no_relationship<'a>(
    parent: &QualifiedName,
    wanted: &str,
    hint: Option<&str>,
    related_names: impl Iterator<Item = &'a str>,
) -> RestError {
    let details = match hint {
        Some(h) => format!(
            "Searched for a foreign key relationship between '{}' and '{wanted}' using the hint '{h}' in the schema '{}', but no matches were found.",
            parent.name, parent.schema
        ),
        None => format!(
            "Searched for a foreign key relationship between '{}' and '{wanted}' in the schema '{}', but no matches were found.",
            parent.name, parent.schema
        ),
    };
    let mut e = RestError::new(
        ErrorKind::NoRelationship,
        format!(
            "Could not find a relationship between '{}' and '{wanted}' in the schema cache",
            parent.name
        ),
    )
    .with_details(details);
    // A suggestion only when it differs (a wrong hint on a real relation suggests nothing).
    if let Some(c) = closest(wanted, related_names).filter(|c| *c != wanted) {
        e = e.with_hint(format!("Perhaps you meant '{c}' instead of '{wanted}'."));
    }
    e
}

pub(crate) fn ambiguous_relationship(
    parent: &QualifiedName,
    wanted: &str,
    candidates: &[&Relationship],
) -> RestError {
    let details: Vec<serde_json::Value> = candidates
        .iter()
        .map(|r| {
            serde_json::json!({
                "cardinality": r.cardinality.label(),
                "embedding": format!("{} with {}", parent.name, r.target.name),
                "relationship": r.describe(),
            })
        })
        .collect();
    let options: Vec<String> = candidates
        .iter()
        .map(|r| match &r.cardinality {
            crate::schema::Cardinality::ManyToMany { junction, .. } => {
                format!("'{wanted}!{}'", junction.name)
            }
            _ => format!("'{wanted}!{}'", r.constraint),
        })
        .collect();
    RestError::new(
        ErrorKind::AmbiguousRelationship,
        format!("Could not embed because more than one relationship was found for '{}' and '{wanted}'", parent.name),
    )
    .with_details(serde_json::Value::Array(details).to_string())
    .with_hint(format!(
        "Try changing '{wanted}' to one of the following: {}. Find the desired relationship in the 'details' key.",
        options.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "ab"), 2);
        assert_eq!(
            closest("projcts", ["projects", "clients"].into_iter()),
            Some("projects")
        );
        assert_eq!(closest("zzzzzz", ["projects", "clients"].into_iter()), None);
    }
}
