//! A tiny character cursor shared by the select, filter and order grammars.

#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(src: &'a str) -> Self {
        Cursor { src, pos: 0 }
    }

    pub fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    pub fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    pub fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    pub fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.bump();
        }
    }

    /// 1-based column of the cursor, as parsec reports it.
    pub fn column(&self) -> usize {
        self.src[..self.pos].chars().count() + 1
    }

    /// Describes the next token for an "unexpected ..." message.
    pub fn unexpected(&self) -> String {
        match self.peek() {
            None => "unexpected end of input".to_string(),
            Some(c) => format!("unexpected \"{c}\""),
        }
    }

    /// Consumes a PostgREST field name: a double-quoted name (with `""`/`\"`
    /// escapes) or a run of letters, digits, `_`, `$`, spaces and single `-`
    /// that are not the start of `->`.
    pub fn name(&mut self) -> Option<String> {
        if self.peek() == Some('"') {
            let save = self.pos;
            self.bump();
            let mut out = String::new();
            loop {
                match self.bump() {
                    None => {
                        self.pos = save;
                        return None;
                    }
                    Some('\\') => match self.bump() {
                        Some(c) => out.push(c),
                        None => {
                            self.pos = save;
                            return None;
                        }
                    },
                    Some('"') => {
                        if self.peek() == Some('"') {
                            self.bump();
                            out.push('"');
                        } else {
                            return Some(out);
                        }
                    }
                    Some(c) => out.push(c),
                }
            }
        }
        let mut out = String::new();
        loop {
            match self.peek() {
                Some(c) if c.is_alphanumeric() || c == '_' || c == '$' || c == ' ' => {
                    out.push(c);
                    self.bump();
                }
                Some('-') if !self.rest().starts_with("->") => {
                    out.push('-');
                    self.bump();
                }
                _ => break,
            }
        }
        let trimmed = out.trim();
        if trimmed.is_empty() {
            None
        } else {
            Some(trimmed.to_string())
        }
    }
}
