//! `order=` terms (wire-compat §2.4).

use super::cursor::Cursor;
use super::select::{parse_json_path, ColumnPath};
use crate::error::RestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderTarget {
    Column(ColumnPath),
    /// `rel(col)`: order parents by a column of a to-one embed.
    Related {
        relation: String,
        field: ColumnPath,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderTerm {
    pub target: OrderTarget,
    pub direction: Option<Direction>,
    pub nulls: Option<Nulls>,
}

pub fn parse_order(input: &str) -> Result<Vec<OrderTerm>, RestError> {
    let mut cur = Cursor::new(input);
    let fail = |cur: &Cursor, expecting: &str| {
        RestError::parse(
            format!(
                "\"failed to parse order ({input})\" (line 1, column {})",
                cur.column()
            ),
            format!("{} expecting {expecting}", cur.unexpected()),
        )
    };
    let mut terms = Vec::new();
    loop {
        cur.skip_ws();
        let name = cur.name().ok_or_else(|| fail(&cur, "field name"))?;
        let target = if cur.eat("(") {
            let column = cur.name().ok_or_else(|| fail(&cur, "field name"))?;
            let json_path = parse_json_path(&mut cur).map_err(|e| fail(&cur, e))?;
            if !cur.eat(")") {
                return Err(fail(&cur, "\")\""));
            }
            OrderTarget::Related {
                relation: name,
                field: ColumnPath { column, json_path },
            }
        } else {
            let json_path = parse_json_path(&mut cur).map_err(|e| fail(&cur, e))?;
            OrderTarget::Column(ColumnPath {
                column: name,
                json_path,
            })
        };
        let mut term = OrderTerm {
            target,
            direction: None,
            nulls: None,
        };
        while cur.eat(".") {
            let word = cur.name().unwrap_or_default();
            match word.as_str() {
                "asc" if term.direction.is_none() && term.nulls.is_none() => {
                    term.direction = Some(Direction::Asc)
                }
                "desc" if term.direction.is_none() && term.nulls.is_none() => {
                    term.direction = Some(Direction::Desc)
                }
                "nullsfirst" if term.nulls.is_none() => term.nulls = Some(Nulls::First),
                "nullslast" if term.nulls.is_none() => term.nulls = Some(Nulls::Last),
                _ => {
                    return Err(fail(
                        &cur,
                        "\"asc\", \"desc\", \"nullsfirst\" or \"nullslast\"",
                    ))
                }
            }
        }
        terms.push(term);
        cur.skip_ws();
        if cur.at_end() {
            return Ok(terms);
        }
        if !cur.eat(",") {
            return Err(fail(&cur, "\",\" or end of input"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms() {
        let t = parse_order("c1.desc.nullslast,c2").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].direction, Some(Direction::Desc));
        assert_eq!(t[0].nulls, Some(Nulls::Last));
        assert_eq!(t[1].direction, None);
        let t = parse_order("a.nullsfirst").unwrap();
        assert_eq!(t[0].nulls, Some(Nulls::First));
        let t = parse_order("clients(name).desc").unwrap();
        assert!(
            matches!(&t[0].target, OrderTarget::Related { relation, field } if relation == "clients" && field.column == "name")
        );
        let t = parse_order("data->>x.asc").unwrap();
        assert!(matches!(&t[0].target, OrderTarget::Column(c) if c.json_path.len() == 1));
        let t = parse_order("\"a.b\".asc").unwrap();
        assert!(matches!(&t[0].target, OrderTarget::Column(c) if c.column == "a.b"));
    }

    #[test]
    fn bad_orders() {
        for bad in [
            "",
            "a.up",
            "a.desc.asc",
            "a,",
            "a(b",
            "a(b).x",
            "a.nullslast.desc",
            ",a",
            "a..desc",
        ] {
            let e = parse_order(bad).unwrap_err();
            assert_eq!(e.code, "PGRST100", "{bad}");
        }
    }
}
