//! `Accept` and `Content-Type` negotiation (wire-compat §2.6).

use crate::error::{ErrorKind, RestError};

/// What the response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMedia {
    Json {
        strip_nulls: bool,
    },
    SingleObject {
        strip_nulls: bool,
    },
    Csv,
    /// `application/geo+json`: a GeoJSON `FeatureCollection` of the rows (PostGIS 3's
    /// `ST_AsGeoJSON(record)`), when the schema cache found PostGIS.
    GeoJson,
    OpenApi,
}

impl ResponseMedia {
    pub fn content_type(self) -> &'static str {
        match self {
            ResponseMedia::Json { strip_nulls: false } => "application/json; charset=utf-8",
            ResponseMedia::Json { strip_nulls: true } => {
                "application/vnd.pgrst.array+json;nulls=stripped; charset=utf-8"
            }
            ResponseMedia::SingleObject { strip_nulls: false } => {
                "application/vnd.pgrst.object+json; charset=utf-8"
            }
            ResponseMedia::SingleObject { strip_nulls: true } => {
                "application/vnd.pgrst.object+json;nulls=stripped; charset=utf-8"
            }
            ResponseMedia::Csv => "text/csv; charset=utf-8",
            ResponseMedia::GeoJson => "application/geo+json; charset=utf-8",
            ResponseMedia::OpenApi => "application/openapi+json; charset=utf-8",
        }
    }

    pub fn is_singular(self) -> bool {
        matches!(self, ResponseMedia::SingleObject { .. })
    }
}

/// `Accept: application/vnd.pgrst.plan[+text|+json]; for="…"; options=analyze|verbose|…`
/// (with `db-plan-enabled`): the response is the statement's `EXPLAIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanMedia {
    pub json: bool,
    /// The `for` media type, when given: the statement explained is the one answering it.
    pub for_media: Option<ResponseMedia>,
    pub analyze: bool,
    pub verbose: bool,
    pub settings: bool,
    pub buffers: bool,
    pub wal: bool,
}

impl PlanMedia {
    fn options(&self) -> Vec<&'static str> {
        [
            (self.analyze, "analyze"),
            (self.verbose, "verbose"),
            (self.settings, "settings"),
            (self.buffers, "buffers"),
            (self.wal, "wal"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| name)
        .collect()
    }

    /// `application/vnd.pgrst.plan+json; for="application/json"; options=verbose; charset=utf-8`.
    pub fn content_type(&self) -> String {
        let mut ct = format!(
            "application/vnd.pgrst.plan+{}",
            if self.json { "json" } else { "text" }
        );
        if let Some(m) = self.for_media {
            let name = match m {
                ResponseMedia::SingleObject { .. } => "application/vnd.pgrst.object+json",
                ResponseMedia::Json { strip_nulls: true } => "application/vnd.pgrst.array+json",
                ResponseMedia::Csv => "text/csv",
                ResponseMedia::GeoJson => "application/geo+json",
                _ => "application/json",
            };
            ct.push_str(&format!("; for=\"{name}\""));
        }
        let options = self.options();
        if !options.is_empty() {
            ct.push_str(&format!("; options={}", options.join("|")));
        }
        ct.push_str("; charset=utf-8");
        ct
    }

    /// The EXPLAIN options: `FORMAT JSON, ANALYZE, VERBOSE`.
    pub fn explain_options(&self) -> String {
        let mut out = vec![if self.json {
            "FORMAT JSON"
        } else {
            "FORMAT TEXT"
        }
        .to_string()];
        out.extend(self.options().iter().map(|o| o.to_ascii_uppercase()));
        out.join(", ")
    }
}

fn parse_plan_media(essence: &str, params: &[(String, String)]) -> Option<PlanMedia> {
    let json = match essence {
        "application/vnd.pgrst.plan" | "application/vnd.pgrst.plan+text" => false,
        "application/vnd.pgrst.plan+json" => true,
        _ => return None,
    };
    let mut plan = PlanMedia {
        json,
        ..PlanMedia::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "for" => {
                let target = v.trim_matches('"').to_ascii_lowercase();
                plan.for_media = Some(match target.as_str() {
                    "application/json" => ResponseMedia::Json { strip_nulls: false },
                    "application/vnd.pgrst.object" | "application/vnd.pgrst.object+json" => {
                        ResponseMedia::SingleObject { strip_nulls: false }
                    }
                    "application/vnd.pgrst.array+json" => ResponseMedia::Json { strip_nulls: true },
                    "text/csv" => ResponseMedia::Csv,
                    "application/geo+json" => ResponseMedia::GeoJson,
                    _ => return None,
                });
            }
            "options" => {
                for o in v.trim_matches('"').split('|') {
                    match o.trim() {
                        "analyze" => plan.analyze = true,
                        "verbose" => plan.verbose = true,
                        "settings" => plan.settings = true,
                        "buffers" => plan.buffers = true,
                        "wal" => plan.wal = true,
                        _ => return None,
                    }
                }
            }
            _ => {}
        }
    }
    Some(plan)
}

/// What a write body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMedia {
    Json,
    Csv,
    FormUrlEncoded,
    TextPlain,
    /// `text/xml`: a call's whole body for a single unnamed `xml` parameter.
    Xml,
    /// `application/octet-stream`: a call's whole body for a single unnamed `bytea` parameter.
    OctetStream,
    Other,
}

pub fn parse_content_type(value: Option<&str>) -> RequestMedia {
    let Some(v) = value else {
        return RequestMedia::Json;
    };
    let essence = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" | "application/json" => RequestMedia::Json,
        "text/csv" => RequestMedia::Csv,
        "application/x-www-form-urlencoded" => RequestMedia::FormUrlEncoded,
        "text/plain" => RequestMedia::TextPlain,
        "text/xml" => RequestMedia::Xml,
        "application/octet-stream" => RequestMedia::OctetStream,
        _ => RequestMedia::Other,
    }
}

/// The `Accept` header's media types, most preferred first (by `q`, then order), each as
/// PostgREST names them in PGRST107: parameters kept, `q` dropped. `q=0` ones are left out.
pub fn accept_list(value: Option<&str>) -> Vec<(String, String)> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return vec![("*/*".to_string(), "*/*".to_string())];
    };
    let mut items: Vec<(f32, usize, String, String)> = Vec::new();
    for (i, item) in v.split(',').enumerate() {
        let mut parts = item.split(';').map(str::trim);
        let essence = parts.next().unwrap_or("").to_ascii_lowercase();
        if essence.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        let mut shown = vec![essence.clone()];
        for param in parts.filter(|p| !p.is_empty()) {
            let (k, val) = param.split_once('=').unwrap_or((param, ""));
            if k.trim().eq_ignore_ascii_case("q") {
                q = val.trim().parse().unwrap_or(1.0);
            } else {
                shown.push(param.to_string());
            }
        }
        items.push((q, i, essence, shown.join(";")));
    }
    items.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    items
        .into_iter()
        .filter(|(q, ..)| *q > 0.0)
        .map(|(_, _, essence, shown)| (essence, shown))
        .collect()
}

/// PGRST107 for an `Accept` list nothing can answer.
pub fn media_type_error(value: Option<&str>) -> RestError {
    let shown: Vec<String> = accept_list(value).into_iter().map(|(_, s)| s).collect();
    RestError::new(
        ErrorKind::MediaTypeNotAvailable,
        format!(
            "None of these media types are available: {}",
            shown.join(", ")
        ),
    )
}

/// Picks the first producible media type of the `Accept` list, honouring `q=0`.
pub fn negotiate_accept(value: Option<&str>, root: bool) -> Result<ResponseMedia, RestError> {
    negotiate(value, root, false).map(|(m, _)| m)
}

/// The outcome of negotiating an `Accept` header: the media answered, and the EXPLAIN asked
/// for instead (`application/vnd.pgrst.plan`), if any.
pub type Negotiated = Result<(ResponseMedia, Option<PlanMedia>), RestError>;

/// As [`negotiate_accept`]; with `plan_enabled`, `application/vnd.pgrst.plan` is producible
/// too: the media is then the one the plan is for. `application/geo+json` is producible
/// here; whether it is in the end depends on PostGIS (see [`negotiate_without_geojson`]).
pub fn negotiate(value: Option<&str>, root: bool, plan_enabled: bool) -> Negotiated {
    negotiate_with(value, root, plan_enabled, true)
}

/// The negotiation when `application/geo+json` is not producible (no PostGIS): what the
/// planner answers instead of a GeoJSON pick (PostgREST's media handler map has no GeoJSON
/// entry then, so the next acceptable type wins, or PGRST107).
pub fn negotiate_without_geojson(
    value: Option<&str>,
    root: bool,
    plan_enabled: bool,
) -> Negotiated {
    negotiate_with(value, root, plan_enabled, false)
}

fn negotiate_with(
    value: Option<&str>,
    root: bool,
    plan_enabled: bool,
    geojson: bool,
) -> Negotiated {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok((
            if root {
                ResponseMedia::OpenApi
            } else {
                ResponseMedia::Json { strip_nulls: false }
            },
            None,
        ));
    };
    let mut candidates: Vec<(f32, usize, ResponseMedia, Option<PlanMedia>)> = Vec::new();
    for (i, item) in v.split(',').enumerate() {
        let mut parts = item.split(';').map(str::trim);
        let essence = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut strip_nulls = false;
        let mut params = Vec::new();
        for param in parts {
            let (k, val) = param.split_once('=').unwrap_or((param, ""));
            let k = k.trim().to_ascii_lowercase();
            match k.as_str() {
                "q" => q = val.trim().parse().unwrap_or(1.0),
                "nulls" => strip_nulls = val.trim().eq_ignore_ascii_case("stripped"),
                _ => {}
            }
            params.push((k, val.trim().to_string()));
        }
        if q <= 0.0 {
            continue;
        }
        if !root && plan_enabled {
            if let Some(plan) = parse_plan_media(&essence, &params) {
                if !geojson && plan.for_media == Some(ResponseMedia::GeoJson) {
                    continue;
                }
                let media = plan
                    .for_media
                    .unwrap_or(ResponseMedia::Json { strip_nulls: false });
                candidates.push((q, i, media, Some(plan)));
                continue;
            }
        }
        let media = match essence.as_str() {
            "*/*" | "application/*" if root => ResponseMedia::OpenApi,
            "application/openapi+json" if root => ResponseMedia::OpenApi,
            "application/json" if root => ResponseMedia::OpenApi,
            "*/*" | "application/*" | "application/json" => {
                ResponseMedia::Json { strip_nulls: false }
            }
            "application/vnd.pgrst.array+json" if !root => ResponseMedia::Json { strip_nulls },
            "application/vnd.pgrst.object+json" if !root => {
                ResponseMedia::SingleObject { strip_nulls }
            }
            "application/vnd.pgrst.object" if !root => ResponseMedia::SingleObject { strip_nulls },
            "text/csv" if !root => ResponseMedia::Csv,
            "application/geo+json" if !root && geojson => ResponseMedia::GeoJson,
            _ => continue,
        };
        candidates.push((q, i, media, None));
    }
    candidates.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    candidates
        .first()
        .map(|c| (c.2, c.3))
        .ok_or_else(|| media_type_error(Some(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_table() {
        let ok: &[(Option<&str>, ResponseMedia)] = &[
            (None, ResponseMedia::Json { strip_nulls: false }),
            (Some(""), ResponseMedia::Json { strip_nulls: false }),
            (Some("*/*"), ResponseMedia::Json { strip_nulls: false }),
            (
                Some("application/json"),
                ResponseMedia::Json { strip_nulls: false },
            ),
            (
                Some("application/json; charset=utf-8"),
                ResponseMedia::Json { strip_nulls: false },
            ),
            (
                Some("application/vnd.pgrst.object+json"),
                ResponseMedia::SingleObject { strip_nulls: false },
            ),
            (
                Some("application/vnd.pgrst.object+json;nulls=stripped"),
                ResponseMedia::SingleObject { strip_nulls: true },
            ),
            (
                Some("application/vnd.pgrst.array+json;nulls=stripped"),
                ResponseMedia::Json { strip_nulls: true },
            ),
            (Some("text/csv"), ResponseMedia::Csv),
            (Some("text/html, text/csv"), ResponseMedia::Csv),
            (
                Some("text/csv;q=0.5, application/json"),
                ResponseMedia::Json { strip_nulls: false },
            ),
            (Some("application/json;q=0, text/csv"), ResponseMedia::Csv),
            (Some("application/geo+json"), ResponseMedia::GeoJson),
            (
                Some("application/geo+json;q=0.5, text/csv"),
                ResponseMedia::Csv,
            ),
        ];
        for (input, want) in ok {
            assert_eq!(negotiate_accept(*input, false).unwrap(), *want, "{input:?}");
        }
        for bad in ["text/html", "application/xml", "image/png;q=1"] {
            let e = negotiate_accept(Some(bad), false).unwrap_err();
            assert_eq!(
                (e.code.as_str(), e.status.as_u16()),
                ("PGRST107", 406),
                "{bad}"
            );
        }
        assert_eq!(
            negotiate_accept(Some("application/json"), true).unwrap(),
            ResponseMedia::OpenApi
        );
        assert!(negotiate_accept(Some("text/csv"), true).is_err());
        assert!(negotiate_accept(Some("application/geo+json"), true).is_err());
    }

    #[test]
    fn geojson_falls_back_to_the_next_acceptable_type_without_postgis() {
        let both = Some("application/geo+json, application/json;q=0.5");
        assert_eq!(
            negotiate(both, false, false).unwrap().0,
            ResponseMedia::GeoJson
        );
        assert_eq!(
            negotiate_without_geojson(both, false, false).unwrap().0,
            ResponseMedia::Json { strip_nulls: false }
        );
        let e = negotiate_without_geojson(Some("application/geo+json"), false, false).unwrap_err();
        assert_eq!((e.code.as_str(), e.status.as_u16()), ("PGRST107", 406));
        assert_eq!(
            e.message,
            "None of these media types are available: application/geo+json"
        );
        let plan = Some("application/vnd.pgrst.plan+json; for=\"application/geo+json\"");
        let (media, explain) = negotiate(plan, false, true).unwrap();
        assert_eq!(media, ResponseMedia::GeoJson);
        assert_eq!(
            explain.unwrap().content_type(),
            "application/vnd.pgrst.plan+json; for=\"application/geo+json\"; charset=utf-8"
        );
        assert!(negotiate_without_geojson(plan, false, true).is_err());
    }

    #[test]
    fn content_types() {
        assert_eq!(parse_content_type(None), RequestMedia::Json);
        assert_eq!(
            parse_content_type(Some("application/json;charset=UTF-8")),
            RequestMedia::Json
        );
        assert_eq!(parse_content_type(Some("text/csv")), RequestMedia::Csv);
        assert_eq!(
            parse_content_type(Some("application/x-www-form-urlencoded")),
            RequestMedia::FormUrlEncoded
        );
        assert_eq!(
            parse_content_type(Some("text/plain")),
            RequestMedia::TextPlain
        );
        assert_eq!(
            parse_content_type(Some("application/xml")),
            RequestMedia::Other
        );
        assert_eq!(parse_content_type(Some("text/xml")), RequestMedia::Xml);
        assert_eq!(
            parse_content_type(Some("application/octet-stream")),
            RequestMedia::OctetStream
        );
    }
}
