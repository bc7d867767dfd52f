//! Filters (`col=op.value`) and logic trees (`or=(...)`), wire-compat §2.3.

use super::cursor::Cursor;
use super::select::{parse_json_path, ColumnPath};
use crate::error::RestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    ILike,
    Match,
    IMatch,
    IsDistinct,
    Contains,
    ContainedIn,
    Overlaps,
    StrictlyLeft,
    StrictlyRight,
    NotExtendsRight,
    NotExtendsLeft,
    Adjacent,
}

impl Operator {
    fn from_name(s: &str) -> Option<Self> {
        use Operator::*;
        Some(match s {
            "eq" => Eq,
            "neq" => Neq,
            "gt" => Gt,
            "gte" => Gte,
            "lt" => Lt,
            "lte" => Lte,
            "like" => Like,
            "ilike" => ILike,
            "match" => Match,
            "imatch" => IMatch,
            "isdistinct" => IsDistinct,
            "cs" => Contains,
            "cd" => ContainedIn,
            "ov" => Overlaps,
            "sl" => StrictlyLeft,
            "sr" => StrictlyRight,
            "nxr" => NotExtendsRight,
            "nxl" => NotExtendsLeft,
            "adj" => Adjacent,
            _ => return None,
        })
    }

    pub fn sql(self) -> &'static str {
        use Operator::*;
        match self {
            Eq => "=",
            Neq => "<>",
            Gt => ">",
            Gte => ">=",
            Lt => "<",
            Lte => "<=",
            Like => "LIKE",
            ILike => "ILIKE",
            Match => "~",
            IMatch => "~*",
            IsDistinct => "IS DISTINCT FROM",
            Contains => "@>",
            ContainedIn => "<@",
            Overlaps => "&&",
            StrictlyLeft => "<<",
            StrictlyRight => ">>",
            NotExtendsRight => "&<",
            NotExtendsLeft => "&>",
            Adjacent => "-|-",
        }
    }

    /// Operators whose right side is text whatever the column type.
    pub fn is_pattern(self) -> bool {
        matches!(
            self,
            Operator::Like | Operator::ILike | Operator::Match | Operator::IMatch
        )
    }

    /// Operators accepting the `(any)`/`(all)` modifier.
    fn quantifiable(self) -> bool {
        use Operator::*;
        matches!(
            self,
            Eq | Gt | Gte | Lt | Lte | Like | ILike | Match | IMatch
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantifier {
    Any,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsValue {
    Null,
    NotNull,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FtsKind {
    Fts,
    Plain,
    Phrase,
    Websearch,
}

impl FtsKind {
    pub fn query_fn(self) -> &'static str {
        match self {
            FtsKind::Fts => "to_tsquery",
            FtsKind::Plain => "plainto_tsquery",
            FtsKind::Phrase => "phraseto_tsquery",
            FtsKind::Websearch => "websearch_to_tsquery",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Compare {
        op: Operator,
        value: String,
    },
    /// `op(any).{a,b}`: the value is a PostgreSQL array literal.
    Quantified {
        op: Operator,
        quantifier: Quantifier,
        values: String,
    },
    In(Vec<String>),
    Is(IsValue),
    Fts {
        kind: FtsKind,
        config: Option<String>,
        query: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub field: ColumnPath,
    pub negate: bool,
    pub operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicOp {
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicTree {
    Expr {
        negate: bool,
        op: LogicOp,
        children: Vec<LogicTree>,
    },
    /// A filter inside a logic tree; its field may carry an embed path (`rel.col`).
    Leaf { path: Vec<String>, filter: Filter },
}

fn filter_error(value: &str, details: impl Into<String>) -> RestError {
    RestError::parse(format!("\"failed to parse filter ({value})\""), details)
}

/// Parses the right side `[not.]op[(mod)].value` of a filter.
pub fn parse_operation(value: &str) -> Result<(bool, Operation), RestError> {
    let (negate, rest) = match value.strip_prefix("not.") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let dot = rest.find('.');
    let (head, arg) = match dot {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => {
            return Err(filter_error(
                value,
                "unexpected end of input expecting operator",
            ))
        }
    };
    let (op_name, modifier) = match head.find('(') {
        Some(i) if head.ends_with(')') => (&head[..i], Some(&head[i + 1..head.len() - 1])),
        Some(_) => return Err(filter_error(value, "unexpected \"(\" expecting \")\"")),
        None => (head, None),
    };
    let operation = match op_name {
        "in" if modifier.is_none() => Operation::In(parse_in_list(arg).ok_or_else(|| {
            filter_error(value, "unexpected input expecting a list like (a,\"b,c\")")
        })?),
        "is" if modifier.is_none() => Operation::Is(match arg.to_ascii_lowercase().as_str() {
            "null" => IsValue::Null,
            "not_null" => IsValue::NotNull,
            "true" => IsValue::True,
            "false" => IsValue::False,
            "unknown" => IsValue::Unknown,
            _ => {
                return Err(filter_error(
                    value,
                    "unexpected value expecting null, not_null, true, false or unknown",
                ))
            }
        }),
        "fts" | "plfts" | "phfts" | "wfts" => {
            let kind = match op_name {
                "fts" => FtsKind::Fts,
                "plfts" => FtsKind::Plain,
                "phfts" => FtsKind::Phrase,
                _ => FtsKind::Websearch,
            };
            let config = modifier.filter(|m| !m.is_empty()).map(str::to_string);
            Operation::Fts {
                kind,
                config,
                query: arg.to_string(),
            }
        }
        _ => {
            let op = Operator::from_name(op_name)
                .ok_or_else(|| filter_error(value, format!("unknown operator \"{op_name}\"")))?;
            match modifier {
                None => {
                    let value = if matches!(op, Operator::Like | Operator::ILike) {
                        arg.replace('*', "%")
                    } else {
                        arg.to_string()
                    };
                    Operation::Compare { op, value }
                }
                Some(m) if op.quantifiable() && (m == "any" || m == "all") => {
                    let quantifier = if m == "any" {
                        Quantifier::Any
                    } else {
                        Quantifier::All
                    };
                    let values = if matches!(op, Operator::Like | Operator::ILike) {
                        arg.replace('*', "%")
                    } else {
                        arg.to_string()
                    };
                    Operation::Quantified {
                        op,
                        quantifier,
                        values,
                    }
                }
                Some(_) => {
                    return Err(filter_error(
                        value,
                        "unexpected modifier expecting (any) or (all)",
                    ))
                }
            }
        }
    };
    Ok((negate, operation))
}

/// `(a,"b,c",d)` → `["a", "b,c", "d"]`; `()` → `[]`.
pub fn parse_in_list(arg: &str) -> Option<Vec<String>> {
    let inner = arg.strip_prefix('(')?.strip_suffix(')')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') && cur.is_empty() {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => cur.push(chars.next()?),
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => cur.push(c),
                }
            }
            if !closed {
                return None;
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.next() {
                None => {
                    out.push(cur);
                    return Some(out);
                }
                Some(',') => out.push(std::mem::take(&mut cur)),
                Some(_) => return None,
            }
        } else {
            let mut ended = true;
            for c in chars.by_ref() {
                if c == ',' {
                    ended = false;
                    break;
                }
                cur.push(c);
            }
            out.push(std::mem::take(&mut cur));
            if ended {
                return Some(out);
            }
        }
    }
}

/// Splits a filter key `rel.sub.col->x` into the embed path and the column.
/// Whether a query value is an operator expression (`eq.1`, `not.is.null`, `fts(english).x`,
/// `like(any).{…}`): on a `GET /rpc/fn`, such a pair filters the result, any other is an
/// argument (PostgREST's partition).
pub fn looks_like_filter(value: &str) -> bool {
    const WORDS: [&str; 27] = [
        "not",
        "eq",
        "neq",
        "gt",
        "gte",
        "lt",
        "lte",
        "like",
        "ilike",
        "match",
        "imatch",
        "in",
        "is",
        "isdistinct",
        "cs",
        "cd",
        "ov",
        "sl",
        "sr",
        "nxr",
        "nxl",
        "adj",
        "fts",
        "plfts",
        "phfts",
        "wfts",
        "any",
    ];
    let word_len = value.find(['.', '(']).unwrap_or(value.len());
    let (word, rest) = value.split_at(word_len);
    !rest.is_empty() && word != "any" && WORDS.contains(&word)
}

pub fn parse_filter_key(key: &str) -> Result<(Vec<String>, ColumnPath), RestError> {
    let err = |c: &Cursor| {
        RestError::parse(
            format!(
                "\"failed to parse filter ({key})\" (line 1, column {})",
                c.column()
            ),
            format!("{} expecting field name", c.unexpected()),
        )
    };
    let mut cur = Cursor::new(key);
    let mut parts = Vec::new();
    loop {
        let name = cur.name().ok_or_else(|| err(&cur))?;
        parts.push(name);
        if !cur.eat(".") {
            break;
        }
    }
    let json_path = parse_json_path(&mut cur).map_err(|_| err(&cur))?;
    if !cur.at_end() {
        return Err(err(&cur));
    }
    let column = parts.pop().unwrap_or_default();
    Ok((parts, ColumnPath { column, json_path }))
}

pub fn parse_filter(key: &str, value: &str) -> Result<(Vec<String>, Filter), RestError> {
    let (path, field) = parse_filter_key(key)?;
    let (negate, operation) = parse_operation(value)?;
    Ok((
        path,
        Filter {
            field,
            negate,
            operation,
        },
    ))
}

/// Parses `(a.eq.1,b.gt.2,and(c.eq.3,d.lt.4))` for a key `or`/`and`/`not.or`.
pub fn parse_logic(op: LogicOp, negate: bool, value: &str) -> Result<LogicTree, RestError> {
    let children = parse_logic_body(value, 0)
        .map_err(|d| RestError::parse(format!("\"failed to parse logic tree ({value})\""), d))?;
    Ok(LogicTree::Expr {
        negate,
        op,
        children,
    })
}

fn parse_logic_body(value: &str, depth: usize) -> Result<Vec<LogicTree>, String> {
    if depth > 32 {
        return Err("too deeply nested".into());
    }
    let inner = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| "expecting \"(\" ... \")\"".to_string())?;
    let mut out = Vec::new();
    for part in split_top_level(inner)? {
        let part = part.trim();
        if part.is_empty() {
            return Err("unexpected \",\" expecting a condition".into());
        }
        out.push(parse_logic_item(part, depth)?);
    }
    if out.is_empty() {
        return Err("unexpected \")\" expecting a condition".into());
    }
    Ok(out)
}

fn parse_logic_item(part: &str, depth: usize) -> Result<LogicTree, String> {
    let (negate, rest) = match part.strip_prefix("not.") {
        Some(r) if r.starts_with("and(") || r.starts_with("or(") => (true, r),
        _ => (false, part),
    };
    for (prefix, op) in [("and(", LogicOp::And), ("or(", LogicOp::Or)] {
        if rest.starts_with(prefix) {
            let children = parse_logic_body(&rest[prefix.len() - 1..], depth + 1)?;
            return Ok(LogicTree::Expr {
                negate,
                op,
                children,
            });
        }
    }
    // A leaf is `field.op.value`; the field may contain dots for embed paths, so
    // take the longest field prefix that is followed by a valid operation.
    let mut search_from = 0;
    while let Some(rel) = part[search_from..].find('.') {
        let i = search_from + rel;
        let (key, op_value) = (&part[..i], &part[i + 1..]);
        if let Ok((negate, mut operation)) = parse_operation(op_value) {
            if let Operation::Compare { value, .. } = &mut operation {
                *value = unquote_value(value);
            }
            let (path, field) = parse_filter_key(key).map_err(|e| e.details.unwrap_or_default())?;
            return Ok(LogicTree::Leaf {
                path,
                filter: Filter {
                    field,
                    negate,
                    operation,
                },
            });
        }
        search_from = i + 1;
    }
    Err(format!(
        "unexpected \"{part}\" expecting field.operator.value"
    ))
}

/// Splits on commas outside quotes, parentheses and braces.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut in_quote, mut escaped, mut start) = (0i32, false, false, 0);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quote => escaped = true,
            '"' => in_quote = !in_quote,
            '(' | '{' | '[' if !in_quote => depth += 1,
            ')' | '}' | ']' if !in_quote => depth -= 1,
            ',' if !in_quote && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err("unexpected \")\"".into());
        }
    }
    if in_quote || depth != 0 {
        return Err("unexpected end of input expecting closing quote or bracket".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// Unquotes a logic-tree value `"a,b"` → `a,b` (values outside trees are verbatim).
pub fn unquote_value(v: &str) -> String {
    match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(value: &str) -> (bool, Operation) {
        parse_operation(value).unwrap_or_else(|e| panic!("{value}: {e:?}"))
    }

    #[test]
    fn comparison_operators() {
        let cases: &[(&str, Operator, &str)] = &[
            ("eq.1", Operator::Eq, "1"),
            ("neq.a", Operator::Neq, "a"),
            (
                "gt.2024-01-01T00:00:00+00:00",
                Operator::Gt,
                "2024-01-01T00:00:00+00:00",
            ),
            ("gte.0", Operator::Gte, "0"),
            ("lt.x.y", Operator::Lt, "x.y"),
            ("lte.", Operator::Lte, ""),
            ("like.*ab*", Operator::Like, "%ab%"),
            ("ilike.A*", Operator::ILike, "A%"),
            ("match.^a.*$", Operator::Match, "^a.*$"),
            ("imatch.x", Operator::IMatch, "x"),
            ("isdistinct.3", Operator::IsDistinct, "3"),
            ("cs.{a,b}", Operator::Contains, "{a,b}"),
            ("cd.{1}", Operator::ContainedIn, "{1}"),
            ("ov.[1,5)", Operator::Overlaps, "[1,5)"),
            ("sl.(1,2)", Operator::StrictlyLeft, "(1,2)"),
            ("sr.(1,2)", Operator::StrictlyRight, "(1,2)"),
            ("nxr.(1,2)", Operator::NotExtendsRight, "(1,2)"),
            ("nxl.(1,2)", Operator::NotExtendsLeft, "(1,2)"),
            ("adj.(1,2)", Operator::Adjacent, "(1,2)"),
            ("cs.{\"a\":1}", Operator::Contains, "{\"a\":1}"),
            ("eq.'; drop table x;--", Operator::Eq, "'; drop table x;--"),
        ];
        for (input, want_op, want_value) in cases {
            let (neg, o) = op(input);
            assert!(!neg);
            assert_eq!(
                o,
                Operation::Compare {
                    op: *want_op,
                    value: want_value.to_string()
                },
                "{input}"
            );
        }
        let (neg, o) = op("not.eq.1");
        assert!(neg);
        assert_eq!(
            o,
            Operation::Compare {
                op: Operator::Eq,
                value: "1".into()
            }
        );
    }

    #[test]
    fn in_lists() {
        let cases: &[(&str, &[&str])] = &[
            ("in.(1,2,3)", &["1", "2", "3"]),
            ("in.()", &[]),
            ("in.(a,\"b,c\")", &["a", "b,c"]),
            ("in.(\"a\\\"b\",\"x)y\")", &["a\"b", "x)y"]),
            ("in.(\"\")", &[""]),
            ("in.(a, b)", &["a", "b"]),
            ("in.(ü)", &["ü"]),
        ];
        for (input, want) in cases {
            let (_, o) = op(input);
            assert_eq!(
                o,
                Operation::In(want.iter().map(|s| s.to_string()).collect()),
                "{input}"
            );
        }
        assert!(op("not.in.(1,2)").0);
        for bad in ["in.1,2", "in.(1,2", "in.(\"a)", "in.(\"a\"b)"] {
            assert!(parse_operation(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn is_values() {
        let cases = [
            ("is.null", IsValue::Null),
            ("is.NULL", IsValue::Null),
            ("is.true", IsValue::True),
            ("is.False", IsValue::False),
            ("is.unknown", IsValue::Unknown),
            ("is.not_null", IsValue::NotNull),
        ];
        for (input, want) in cases {
            assert_eq!(op(input).1, Operation::Is(want), "{input}");
        }
        assert!(op("not.is.null").0);
        assert!(parse_operation("is.maybe").is_err());
    }

    #[test]
    fn fts_and_quantifiers() {
        assert_eq!(
            op("fts(english).cat & dog").1,
            Operation::Fts {
                kind: FtsKind::Fts,
                config: Some("english".into()),
                query: "cat & dog".into()
            }
        );
        assert_eq!(
            op("plfts.cat").1,
            Operation::Fts {
                kind: FtsKind::Plain,
                config: None,
                query: "cat".into()
            }
        );
        assert!(matches!(
            op("phfts(simple).a b").1,
            Operation::Fts {
                kind: FtsKind::Phrase,
                ..
            }
        ));
        assert!(matches!(
            op("wfts.a or b").1,
            Operation::Fts {
                kind: FtsKind::Websearch,
                ..
            }
        ));
        assert_eq!(
            op("like(any).{a*,*b}").1,
            Operation::Quantified {
                op: Operator::Like,
                quantifier: Quantifier::Any,
                values: "{a%,%b}".into()
            }
        );
        assert_eq!(
            op("eq(all).{1,2}").1,
            Operation::Quantified {
                op: Operator::Eq,
                quantifier: Quantifier::All,
                values: "{1,2}".into()
            }
        );
        for bad in [
            "cs(any).{1}",
            "eq(some).{1}",
            "eq(any.{1}",
            "in(any).(1)",
            "foo.1",
            "eq",
            "",
            "not.eq",
        ] {
            assert!(parse_operation(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operator_values_are_filters() {
        for v in [
            "eq.1",
            "not.is.null",
            "fts(english).cat",
            "like(any).{a*}",
            "in.(1,2)",
            "is.null",
            "plfts.a b",
        ] {
            assert!(looks_like_filter(v), "{v}");
        }
        for v in [
            "1",
            "eq",
            "hello.world",
            "",
            "{a,b}",
            "[1,2]",
            "equal.x",
            "any.x",
        ] {
            assert!(!looks_like_filter(v), "{v}");
        }
    }

    #[test]
    fn filter_keys() {
        let (path, f) = parse_filter_key("name").unwrap();
        assert!(path.is_empty());
        assert_eq!(f.column, "name");
        let (path, f) = parse_filter_key("projects.tasks.title").unwrap();
        assert_eq!(path, vec!["projects", "tasks"]);
        assert_eq!(f.column, "title");
        let (_, f) = parse_filter_key("data->a->>b").unwrap();
        assert_eq!(f.json_path.len(), 2);
        let (_, f) = parse_filter_key("\"my.col\"").unwrap();
        assert_eq!(f.column, "my.col");
        for bad in ["", ".", "a.", "a->", "a(b)"] {
            assert!(parse_filter_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logic_trees() {
        let t = parse_logic(LogicOp::Or, false, "(a.eq.1,b.gt.2)").unwrap();
        let LogicTree::Expr {
            op,
            children,
            negate,
        } = t
        else {
            panic!()
        };
        assert_eq!((op, negate, children.len()), (LogicOp::Or, false, 2));
        let t = parse_logic(
            LogicOp::Or,
            true,
            "(a.eq.1,and(b.eq.2,c.lt.3),not.or(d.is.null,e.in.(1,2)))",
        )
        .unwrap();
        let LogicTree::Expr {
            children, negate, ..
        } = t
        else {
            panic!()
        };
        assert!(negate);
        assert!(
            matches!(&children[1], LogicTree::Expr { op: LogicOp::And, negate: false, children } if children.len() == 2)
        );
        assert!(matches!(
            &children[2],
            LogicTree::Expr {
                op: LogicOp::Or,
                negate: true,
                ..
            }
        ));
        let t = parse_logic(
            LogicOp::And,
            false,
            "(rel.col.eq.x,a.not.is.null,name.eq.\"a,b\")",
        )
        .unwrap();
        let LogicTree::Expr { children, .. } = t else {
            panic!()
        };
        let LogicTree::Leaf { path, filter } = &children[0] else {
            panic!()
        };
        assert_eq!(path, &vec!["rel".to_string()]);
        assert_eq!(filter.field.column, "col");
        let LogicTree::Leaf { filter, .. } = &children[1] else {
            panic!()
        };
        assert!(filter.negate);
        let LogicTree::Leaf { filter, .. } = &children[2] else {
            panic!()
        };
        assert_eq!(
            filter.operation,
            Operation::Compare {
                op: Operator::Eq,
                value: "a,b".into()
            }
        );
        let t = parse_logic(LogicOp::Or, false, "(a.cs.{1,2},b.eq.x.y)").unwrap();
        let LogicTree::Expr { children, .. } = t else {
            panic!()
        };
        assert_eq!(children.len(), 2);
        for bad in [
            "a.eq.1",
            "()",
            "(a.eq.1",
            "(a.eq.1,)",
            "(a)",
            "(a.zz.1)",
            "(\"a.eq.1)",
            "(a.eq.1))",
        ] {
            assert!(parse_logic(LogicOp::Or, false, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unquoting() {
        assert_eq!(unquote_value("\"a,b\""), "a,b");
        assert_eq!(unquote_value("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote_value("plain"), "plain");
        assert_eq!(unquote_value("\""), "\"");
    }
}
