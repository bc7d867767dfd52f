//! `Accept` and `Content-Type` negotiation (wire-compat §2.6).

use crate::error::{ErrorKind, RestError};

/// What the response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMedia {
    Json { strip_nulls: bool },
    SingleObject { strip_nulls: bool },
    Csv,
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
            ResponseMedia::OpenApi => "application/openapi+json; charset=utf-8",
        }
    }

    pub fn is_singular(self) -> bool {
        matches!(self, ResponseMedia::SingleObject { .. })
    }
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

/// Picks the first producible media type of the `Accept` list, honouring `q=0`.
pub fn negotiate_accept(value: Option<&str>, root: bool) -> Result<ResponseMedia, RestError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(if root {
            ResponseMedia::OpenApi
        } else {
            ResponseMedia::Json { strip_nulls: false }
        });
    };
    let mut candidates: Vec<(f32, usize, ResponseMedia)> = Vec::new();
    for (i, item) in v.split(',').enumerate() {
        let mut parts = item.split(';').map(str::trim);
        let essence = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut strip_nulls = false;
        for param in parts {
            let (k, val) = param.split_once('=').unwrap_or((param, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = val.trim().parse().unwrap_or(1.0),
                "nulls" => strip_nulls = val.trim().eq_ignore_ascii_case("stripped"),
                _ => {}
            }
        }
        if q <= 0.0 {
            continue;
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
            _ => continue,
        };
        candidates.push((q, i, media));
    }
    candidates.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    candidates.first().map(|c| c.2).ok_or_else(|| {
        RestError::new(
            ErrorKind::MediaTypeNotAvailable,
            format!("None of these media types are available: {v}"),
        )
    })
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
        ];
        for (input, want) in ok {
            assert_eq!(negotiate_accept(*input, false).unwrap(), *want, "{input:?}");
        }
        for bad in [
            "text/html",
            "application/xml",
            "application/geo+json",
            "image/png;q=1",
        ] {
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
