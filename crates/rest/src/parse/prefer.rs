//! The `Prefer` header (wire-compat §2.5): every header split on `,`, trimmed,
//! first value of each kind wins.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    Representation,
    HeadersOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPref {
    Exact,
    Planned,
    Estimated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxPref {
    Commit,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    Strict,
    Lenient,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preferences {
    pub return_: Option<ReturnPref>,
    pub count: Option<CountPref>,
    pub resolution: Option<Resolution>,
    pub missing_default: bool,
    pub tx: Option<TxPref>,
    pub handling: Option<Handling>,
    pub max_affected: Option<i64>,
    pub params_single_object: bool,
    pub timezone: Option<String>,
    /// Values that were not understood; an error only with `handling=strict`.
    pub invalid: Vec<String>,
}

impl Preferences {
    pub fn parse<'a>(headers: impl IntoIterator<Item = &'a str>) -> Self {
        let mut p = Preferences::default();
        let mut missing_seen = false;
        let mut params_seen = false;
        for header in headers {
            for raw in header.split(',') {
                let item = raw.trim();
                if item.is_empty() {
                    continue;
                }
                let (key, value) = match item.split_once('=') {
                    Some((k, v)) => (k.trim(), v.trim()),
                    None => (item, ""),
                };
                let known = match key {
                    "return" => set_once(
                        &mut p.return_,
                        match value {
                            "minimal" => Some(ReturnPref::Minimal),
                            "representation" => Some(ReturnPref::Representation),
                            "headers-only" => Some(ReturnPref::HeadersOnly),
                            _ => None,
                        },
                    ),
                    "count" => set_once(
                        &mut p.count,
                        match value {
                            "exact" => Some(CountPref::Exact),
                            "planned" => Some(CountPref::Planned),
                            "estimated" => Some(CountPref::Estimated),
                            _ => None,
                        },
                    ),
                    "resolution" => set_once(
                        &mut p.resolution,
                        match value {
                            "merge-duplicates" => Some(Resolution::MergeDuplicates),
                            "ignore-duplicates" => Some(Resolution::IgnoreDuplicates),
                            _ => None,
                        },
                    ),
                    "tx" => set_once(
                        &mut p.tx,
                        match value {
                            "commit" => Some(TxPref::Commit),
                            "rollback" => Some(TxPref::Rollback),
                            _ => None,
                        },
                    ),
                    "handling" => set_once(
                        &mut p.handling,
                        match value {
                            "strict" => Some(Handling::Strict),
                            "lenient" => Some(Handling::Lenient),
                            _ => None,
                        },
                    ),
                    "max-affected" => set_once(
                        &mut p.max_affected,
                        value.parse::<i64>().ok().filter(|n| *n >= 0),
                    ),
                    "timezone" => set_once(
                        &mut p.timezone,
                        (!value.is_empty()).then(|| value.to_string()),
                    ),
                    "missing" => {
                        let ok = value == "default" || value == "null";
                        if ok && !missing_seen {
                            missing_seen = true;
                            p.missing_default = value == "default";
                        }
                        ok
                    }
                    "params" => {
                        let ok = value == "single-object" || value == "multiple-objects";
                        if ok && !params_seen {
                            params_seen = true;
                            p.params_single_object = value == "single-object";
                        }
                        ok
                    }
                    _ => false,
                };
                if !known {
                    p.invalid.push(item.to_string());
                }
            }
        }
        p
    }
}

/// Stores the first valid value; reports whether the value was understood.
fn set_once<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            if slot.is_none() {
                *slot = Some(v);
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_trim_first_wins() {
        let p = Preferences::parse(["return=representation,count=exact"]);
        assert_eq!(p.return_, Some(ReturnPref::Representation));
        assert_eq!(p.count, Some(CountPref::Exact));
        let p = Preferences::parse(["return=minimal, return=representation", "count=planned"]);
        assert_eq!(p.return_, Some(ReturnPref::Minimal));
        assert_eq!(p.count, Some(CountPref::Planned));
        let p = Preferences::parse([
            "resolution=merge-duplicates",
            "resolution=ignore-duplicates",
        ]);
        assert_eq!(p.resolution, Some(Resolution::MergeDuplicates));
        let p = Preferences::parse(["missing=default,tx=rollback,handling=strict,max-affected=5"]);
        assert!(p.missing_default);
        assert_eq!(p.tx, Some(TxPref::Rollback));
        assert_eq!(p.handling, Some(Handling::Strict));
        assert_eq!(p.max_affected, Some(5));
        assert!(p.invalid.is_empty());
        let p = Preferences::parse(["params=single-object", "timezone=UTC", "count=estimated"]);
        assert!(p.params_single_object);
        assert_eq!(p.timezone.as_deref(), Some("UTC"));
        assert_eq!(p.count, Some(CountPref::Estimated));
        let p = Preferences::parse(["return=headers-only"]);
        assert_eq!(p.return_, Some(ReturnPref::HeadersOnly));
    }

    #[test]
    fn unknown_values_are_collected() {
        let p = Preferences::parse(["return=everything, foo, count=some,max-affected=-1"]);
        assert_eq!(p.return_, None);
        assert_eq!(
            p.invalid,
            vec!["return=everything", "foo", "count=some", "max-affected=-1"]
        );
        let p = Preferences::parse(["", " , ,"]);
        assert_eq!(p, Preferences::default());
    }
}
