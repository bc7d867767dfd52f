//! The `select=` grammar (wire-compat §2.2).

use super::cursor::Cursor;
use crate::error::RestError;

/// One step of a JSON path: `->key`, `->>key`, `->0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonStep {
    /// `->>` (text) rather than `->` (json).
    pub as_text: bool,
    pub key: JsonKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonKey {
    Field(String),
    Index(i64),
}

/// A column reference optionally followed by a JSON path (`data->a->>b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPath {
    pub column: String,
    pub json_path: Vec<JsonStep>,
}

impl ColumnPath {
    pub fn plain(column: &str) -> Self {
        ColumnPath {
            column: column.to_string(),
            json_path: Vec::new(),
        }
    }

    /// The key PostgREST gives the output: the last JSON key, else the column.
    pub fn output_name(&self) -> String {
        match self.json_path.last() {
            Some(JsonStep {
                key: JsonKey::Field(f),
                ..
            }) => f.clone(),
            Some(JsonStep {
                key: JsonKey::Index(_),
                ..
            })
            | None => self.column.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Avg,
    Max,
    Min,
}

impl AggregateFn {
    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "count" => AggregateFn::Count,
            "sum" => AggregateFn::Sum,
            "avg" => AggregateFn::Avg,
            "max" => AggregateFn::Max,
            "min" => AggregateFn::Min,
            _ => return None,
        })
    }

    pub fn sql_name(self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Avg => "avg",
            AggregateFn::Max => "max",
            AggregateFn::Min => "min",
        }
    }
}

/// What a select field reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldTarget {
    Column(ColumnPath),
    /// The bare `count()` aggregate.
    CountAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectField {
    pub alias: Option<String>,
    pub target: FieldTarget,
    /// `col::type`, applied to the column.
    pub cast: Option<String>,
    pub aggregate: Option<AggregateFn>,
    /// `col.sum()::type`, applied to the aggregate's result.
    pub aggregate_cast: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
}

/// An embedded resource `alias:rel!hint!inner(...)` or spread `...rel(...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embed {
    pub alias: Option<String>,
    pub relation: String,
    pub hint: Option<String>,
    pub join: Option<JoinType>,
    pub spread: bool,
    pub select: Vec<SelectItem>,
}

impl Embed {
    /// The name the embed is referred to by in filters and in the output.
    pub fn label(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.relation)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    Star,
    Field(SelectField),
    Embed(Embed),
}

/// The parsed `select=` tree.
pub type SelectTree = Vec<SelectItem>;

pub fn parse_select(input: &str) -> Result<SelectTree, RestError> {
    let mut cur = Cursor::new(input);
    let fail = |cur: &Cursor, expecting: &str| {
        RestError::parse(
            format!(
                "\"failed to parse select parameter ({input})\" (line 1, column {})",
                cur.column()
            ),
            format!("{} expecting {expecting}", cur.unexpected()),
        )
    };
    let items = parse_items(&mut cur, 0).map_err(|e| fail(&cur, e))?;
    if !cur.at_end() {
        return Err(fail(&cur, "\",\" or end of input"));
    }
    Ok(items)
}

const MAX_DEPTH: usize = 32;

fn parse_items(cur: &mut Cursor, depth: usize) -> Result<Vec<SelectItem>, &'static str> {
    if depth > MAX_DEPTH {
        return Err("less nesting");
    }
    let mut items = Vec::new();
    cur.skip_ws();
    // An empty list is valid: `select=` means all columns, `rel()` selects nothing.
    if cur.at_end() || cur.peek() == Some(')') {
        return Ok(items);
    }
    loop {
        cur.skip_ws();
        items.push(parse_item(cur, depth)?);
        cur.skip_ws();
        if !cur.eat(",") {
            break;
        }
    }
    Ok(items)
}

fn parse_item(cur: &mut Cursor, depth: usize) -> Result<SelectItem, &'static str> {
    if cur.eat("*") {
        return Ok(SelectItem::Star);
    }
    if cur.eat("...") {
        let relation = cur.name().ok_or("field name")?;
        let (hint, join) = parse_hints(cur)?;
        if !cur.eat("(") {
            return Err("\"(\"");
        }
        let select = parse_items(cur, depth + 1)?;
        if !cur.eat(")") {
            return Err("\")\"");
        }
        return Ok(SelectItem::Embed(Embed {
            alias: None,
            relation,
            hint,
            join,
            spread: true,
            select,
        }));
    }
    let first = cur.name().ok_or("field name, \"*\" or \"...\"")?;
    let (alias, name) = if cur.rest().starts_with(':') && !cur.rest().starts_with("::") {
        cur.bump();
        cur.skip_ws();
        if cur.eat("...") {
            return Err("field name");
        }
        (Some(first), cur.name().ok_or("field name")?)
    } else {
        (None, first)
    };
    // `count()` on its own.
    if name == "count" && cur.rest().starts_with("()") {
        cur.eat("()");
        let aggregate_cast = parse_cast(cur)?;
        return Ok(SelectItem::Field(SelectField {
            alias,
            target: FieldTarget::CountAll,
            cast: None,
            aggregate: Some(AggregateFn::Count),
            aggregate_cast,
        }));
    }
    if cur.peek() == Some('!') || cur.peek() == Some('(') {
        let (hint, join) = parse_hints(cur)?;
        if !cur.eat("(") {
            return Err("\"(\"");
        }
        let select = parse_items(cur, depth + 1)?;
        if !cur.eat(")") {
            return Err("\")\"");
        }
        return Ok(SelectItem::Embed(Embed {
            alias,
            relation: name,
            hint,
            join,
            spread: false,
            select,
        }));
    }
    let json_path = parse_json_path(cur)?;
    let cast = parse_cast(cur)?;
    let mut aggregate = None;
    let mut aggregate_cast = None;
    if cur.rest().starts_with('.') {
        cur.bump();
        let fname = cur.name().ok_or("aggregate function")?;
        let agg = AggregateFn::from_name(&fname).ok_or("aggregate function")?;
        if !cur.eat("()") {
            return Err("\"()\"");
        }
        aggregate = Some(agg);
        aggregate_cast = parse_cast(cur)?;
    }
    Ok(SelectItem::Field(SelectField {
        alias,
        target: FieldTarget::Column(ColumnPath {
            column: name,
            json_path,
        }),
        cast,
        aggregate,
        aggregate_cast,
    }))
}

fn parse_hints(cur: &mut Cursor) -> Result<(Option<String>, Option<JoinType>), &'static str> {
    let mut hint = None;
    let mut join = None;
    while cur.eat("!") {
        let word = cur.name().ok_or("hint or join type")?;
        match word.as_str() {
            "inner" => join = Some(JoinType::Inner),
            "left" => join = Some(JoinType::Left),
            _ if hint.is_none() => hint = Some(word),
            _ => return Err("\"inner\" or \"left\""),
        }
    }
    Ok((hint, join))
}

pub(crate) fn parse_json_path(cur: &mut Cursor) -> Result<Vec<JsonStep>, &'static str> {
    let mut steps = Vec::new();
    loop {
        let as_text = if cur.eat("->>") {
            true
        } else if cur.eat("->") {
            false
        } else {
            return Ok(steps);
        };
        let key = json_key(cur).ok_or("JSON key")?;
        steps.push(JsonStep { as_text, key });
    }
}

fn json_key(cur: &mut Cursor) -> Option<JsonKey> {
    let rest = cur.rest();
    let digits_len = {
        let bytes = rest.as_bytes();
        let mut i = usize::from(bytes.first() == Some(&b'-'));
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let ends_key =
            !matches!(rest[i..].chars().next(), Some(c) if c.is_alphanumeric() || c == '_');
        if i > start && ends_key {
            i
        } else {
            0
        }
    };
    if digits_len > 0 {
        let n: i64 = rest[..digits_len].parse().ok()?;
        for _ in 0..digits_len {
            cur.bump();
        }
        return Some(JsonKey::Index(n));
    }
    cur.name().map(JsonKey::Field)
}

fn parse_cast(cur: &mut Cursor) -> Result<Option<String>, &'static str> {
    if !cur.eat("::") {
        return Ok(None);
    }
    let mut ty = String::new();
    while let Some(c) = cur.peek() {
        if c.is_ascii_alphanumeric() || c == '_' {
            ty.push(c);
            cur.bump();
        } else {
            break;
        }
    }
    if ty.is_empty() {
        return Err("cast type");
    }
    if cur.eat("[]") {
        ty.push_str("[]");
    }
    Ok(Some(ty))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> SelectItem {
        SelectItem::Field(SelectField {
            alias: None,
            target: FieldTarget::Column(ColumnPath::plain(name)),
            cast: None,
            aggregate: None,
            aggregate_cast: None,
        })
    }

    #[test]
    fn simple_lists() {
        let cases: &[(&str, Vec<SelectItem>)] = &[
            ("id", vec![col("id")]),
            ("id,name", vec![col("id"), col("name")]),
            ("*", vec![SelectItem::Star]),
            ("*,id", vec![SelectItem::Star, col("id")]),
            ("", vec![]),
            ("id, name", vec![col("id"), col("name")]),
            ("\"my col\"", vec![col("my col")]),
            ("\"a,b\"", vec![col("a,b")]),
            ("\"q\"\"x\"", vec![col("q\"x")]),
            ("a-b", vec![col("a-b")]),
            ("$x", vec![col("$x")]),
            ("ünï", vec![col("ünï")]),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_select(input).unwrap(), want, "{input}");
        }
    }

    fn field(input: &str) -> SelectField {
        match parse_select(input).unwrap().remove(0) {
            SelectItem::Field(f) => f,
            other => panic!("not a field: {other:?}"),
        }
    }

    fn embed(input: &str) -> Embed {
        match parse_select(input).unwrap().remove(0) {
            SelectItem::Embed(e) => e,
            other => panic!("not an embed: {other:?}"),
        }
    }

    #[test]
    fn alias_cast_json() {
        let f = field("n:name");
        assert_eq!(f.alias.as_deref(), Some("n"));
        let f = field("price::text");
        assert_eq!(f.cast.as_deref(), Some("text"));
        let f = field("p:price::numeric");
        assert_eq!(
            (f.alias.as_deref(), f.cast.as_deref()),
            (Some("p"), Some("numeric"))
        );
        let f = field("data->a->>b");
        let FieldTarget::Column(c) = &f.target else {
            panic!()
        };
        assert_eq!(c.column, "data");
        assert_eq!(c.json_path.len(), 2);
        assert!(!c.json_path[0].as_text && c.json_path[1].as_text);
        assert_eq!(c.output_name(), "b");
        let f = field("data->0");
        let FieldTarget::Column(c) = &f.target else {
            panic!()
        };
        assert_eq!(c.json_path[0].key, JsonKey::Index(0));
        assert_eq!(c.output_name(), "data");
        let f = field("data->-1");
        let FieldTarget::Column(c) = &f.target else {
            panic!()
        };
        assert_eq!(c.json_path[0].key, JsonKey::Index(-1));
        let f = field("data->1a");
        let FieldTarget::Column(c) = &f.target else {
            panic!()
        };
        assert_eq!(c.json_path[0].key, JsonKey::Field("1a".into()));
        let f = field("data->>\"a b\"::int");
        assert_eq!(f.cast.as_deref(), Some("int"));
        let f = field("tags::text[]");
        assert_eq!(f.cast.as_deref(), Some("text[]"));
    }

    #[test]
    fn aggregates() {
        let f = field("count()");
        assert_eq!(f.target, FieldTarget::CountAll);
        assert_eq!(f.aggregate, Some(AggregateFn::Count));
        let f = field("amount.sum()");
        assert_eq!(f.aggregate, Some(AggregateFn::Sum));
        let f = field("t:amount.avg()::int");
        assert_eq!(f.alias.as_deref(), Some("t"));
        assert_eq!(f.aggregate_cast.as_deref(), Some("int"));
        let f = field("amount::numeric.max()");
        assert_eq!(f.cast.as_deref(), Some("numeric"));
        assert_eq!(f.aggregate, Some(AggregateFn::Max));
        let f = field("c:count()::text");
        assert_eq!(f.aggregate_cast.as_deref(), Some("text"));
        assert!(parse_select("amount.median()").is_err());
        assert!(parse_select("amount.sum").is_err());
    }

    #[test]
    fn embeds() {
        let e = embed("author(*)");
        assert_eq!(e.relation, "author");
        assert_eq!(e.select, vec![SelectItem::Star]);
        let e = embed("a:author(id)");
        assert_eq!(e.alias.as_deref(), Some("a"));
        assert_eq!(e.label(), "a");
        let e = embed("x!inner(*)");
        assert_eq!(e.join, Some(JoinType::Inner));
        let e = embed("x!left(*)");
        assert_eq!(e.join, Some(JoinType::Left));
        let e = embed("x!fk_name(*)");
        assert_eq!(e.hint.as_deref(), Some("fk_name"));
        let e = embed("x!hint!inner(id)");
        assert_eq!(
            (e.hint.as_deref(), e.join),
            (Some("hint"), Some(JoinType::Inner))
        );
        let e = embed("x!inner!hint(id)");
        assert_eq!(
            (e.hint.as_deref(), e.join),
            (Some("hint"), Some(JoinType::Inner))
        );
        let e = embed("actors()");
        assert!(e.select.is_empty());
        let e = embed("...author(name)");
        assert!(e.spread);
        let e = embed("...author!inner(name)");
        assert!(e.spread && e.join == Some(JoinType::Inner));
        let e = embed("projects(id,tasks(id,title),client:clients(name))");
        assert_eq!(e.select.len(), 3);
        let SelectItem::Embed(inner) = &e.select[2] else {
            panic!()
        };
        assert_eq!(inner.alias.as_deref(), Some("client"));
        assert!(!e.spread);
    }

    #[test]
    fn errors_point_at_the_problem() {
        let cases = [
            ("id,name(()", 9),
            ("id,", 4),
            ("(", 1),
            ("a(", 3),
            ("a)", 2),
            ("a::", 4),
            ("x!a!b!c(*)", 6),
            ("a->", 4),
            ("a:", 3),
            ("a:...b(c)", 6),
            ("...a", 5),
            ("a,,b", 3),
            ("\"unterminated", 1),
        ];
        for (input, column) in cases {
            let err = parse_select(input).unwrap_err();
            assert_eq!(err.code, "PGRST100", "{input}");
            assert!(
                err.message.contains(&format!("({input})")),
                "{input}: {}",
                err.message
            );
            assert!(
                err.message.ends_with(&format!("column {column})")),
                "{input}: {}",
                err.message
            );
            assert!(
                err.details
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("unexpected"),
                "{input}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_rejected_not_overflowed() {
        let input = "a(".repeat(200) + &")".repeat(200);
        assert!(parse_select(&input).is_err());
    }
}
