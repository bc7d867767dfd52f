//! The text of an uploaded document, for `documents.content_text` (which the embedding
//! pipeline and full-text search read): plain text as it is, Markdown without its markup,
//! PDF through `pdf-extract`. Other types (images, office files) are stored without text.
use std::panic::AssertUnwindSafe;

/// Longest text kept, in bytes: the generated `fts` tsvector has a 1 MiB ceiling, and
/// search needs the gist of a document, not all of a 500-page manual.
pub const MAX_TEXT_BYTES: usize = 512 * 1024;

/// A format whose text can be extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Pdf,
}

impl Format {
    /// From the declared MIME type, else the file name's extension, else the bytes' magic.
    pub fn detect(mime: &str, file_name: &str, head: &[u8]) -> Option<Format> {
        let base = mime
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/pdf" => return Some(Format::Pdf),
            "text/markdown" | "text/x-markdown" => return Some(Format::Markdown),
            "text/plain" | "text/csv" => {}
            b if b.starts_with("text/") => return Some(Format::Text),
            _ => {}
        }
        let ext = file_name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "md" | "markdown" | "mdown" => return Some(Format::Markdown),
            "pdf" => return Some(Format::Pdf),
            "txt" | "text" | "csv" | "log" => return Some(Format::Text),
            _ => {}
        }
        if head.starts_with(b"%PDF-") {
            return Some(Format::Pdf);
        }
        if base == "text/plain" || base == "text/csv" {
            return Some(Format::Text);
        }
        None
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Pdf => "pdf",
        }
    }
}

/// What extraction gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub text: String,
    /// The text was cut at [`MAX_TEXT_BYTES`].
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the file is not valid UTF-8 text")]
    NotUtf8,
    #[error("the PDF could not be read: {0}")]
    Pdf(String),
}

/// Extracts and tidies the text (CPU-bound: call it on a blocking thread).
pub fn extract(format: Format, bytes: &[u8]) -> Result<Extracted, ExtractError> {
    let raw = match format {
        Format::Text => text(bytes)?,
        Format::Markdown => markdown(&text(bytes)?),
        Format::Pdf => pdf(bytes)?,
    };
    Ok(tidy(&raw))
}

fn text(bytes: &[u8]) -> Result<String, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    String::from_utf8(bytes.to_vec()).map_err(|_| ExtractError::NotUtf8)
}

/// Markdown rendered to its reading text: headings, paragraphs, list items and code on
/// lines of their own; links keep their text, images their alt text, HTML loses its tags.
fn markdown(src: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, TagEnd};
    let mut out = String::with_capacity(src.len());
    for event in Parser::new_ext(src, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH) {
        match event {
            Event::Text(t) | Event::Code(t) => out.push_str(&t),
            Event::SoftBreak => out.push(' '),
            Event::HardBreak => out.push('\n'),
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::Item
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::TableRow
                | TagEnd::TableHead,
            ) => out.push('\n'),
            Event::End(TagEnd::TableCell) => out.push('\t'),
            Event::Rule => out.push('\n'),
            _ => {}
        }
    }
    out
}

fn pdf(bytes: &[u8]) -> Result<String, ExtractError> {
    // pdf-extract panics on some malformed files: a bad upload is an error, not a crash.
    match std::panic::catch_unwind(AssertUnwindSafe(|| {
        pdf_extract::extract_text_from_mem(bytes)
    })) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(ExtractError::Pdf(e.to_string())),
        Err(_) => Err(ExtractError::Pdf("the file is malformed".into())),
    }
}

/// No NULs (PostgreSQL text has none) or other control characters but tab and newline,
/// spaces collapsed, at most one blank line in a row, trimmed, cut at a char boundary.
fn tidy(raw: &str) -> Extracted {
    let mut out = String::with_capacity(raw.len().min(MAX_TEXT_BYTES));
    let mut blank_lines = 0;
    let mut truncated = false;
    for line in raw.lines() {
        let mut l = String::with_capacity(line.len());
        let mut space = false;
        for c in line.chars() {
            if c == '\t' || c == ' ' || c == '\u{a0}' {
                space = true;
            } else if !c.is_control() {
                if space && !l.is_empty() {
                    l.push(' ');
                }
                space = false;
                l.push(c);
            }
        }
        if l.is_empty() {
            blank_lines += 1;
            continue;
        }
        let sep = match (out.is_empty(), blank_lines) {
            (true, _) => "",
            (false, 0) => "\n",
            _ => "\n\n",
        };
        blank_lines = 0;
        if out.len() + sep.len() + l.len() > MAX_TEXT_BYTES {
            let room = MAX_TEXT_BYTES.saturating_sub(out.len() + sep.len());
            let mut cut = room.min(l.len());
            while !l.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut > 0 {
                out.push_str(sep);
                out.push_str(&l[..cut]);
            }
            truncated = true;
            break;
        }
        out.push_str(sep);
        out.push_str(&l);
    }
    Extracted {
        text: out,
        truncated,
    }
}

/// A one-page PDF 1.4 with the given lines in Helvetica (cross-reference offsets exact):
/// test data for the extractor and the `documents` function, no PDF library needed.
pub fn minimal_pdf(lines: &[&str]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
    for l in lines {
        let esc = l
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({esc}) Tj T*\n"));
    }
    content.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_detected_from_mime_then_name_then_magic() {
        assert_eq!(
            Format::detect("application/pdf", "x", b""),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::detect("text/markdown; charset=utf-8", "x", b""),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::detect("text/plain", "notes.md", b""),
            Some(Format::Markdown)
        );
        assert_eq!(
            Format::detect("text/plain", "notes", b""),
            Some(Format::Text)
        );
        assert_eq!(Format::detect("text/html", "x", b""), Some(Format::Text));
        assert_eq!(
            Format::detect("application/octet-stream", "Brief.PDF", b""),
            Some(Format::Pdf)
        );
        assert_eq!(
            Format::detect("application/octet-stream", "blob", b"%PDF-1.7\n"),
            Some(Format::Pdf)
        );
        assert_eq!(Format::detect("image/png", "logo.png", b"\x89PNG"), None);
    }

    #[test]
    fn plain_text_is_tidied() {
        let e = extract(
            Format::Text,
            b"\xEF\xBB\xBF  Hello\t\tworld \0\n\n\n\nsecond  line\r\n",
        )
        .unwrap();
        assert_eq!(e.text, "Hello world\n\nsecond line");
        assert!(!e.truncated);
        assert_eq!(
            extract(Format::Text, b"\xff\xfe"),
            Err(ExtractError::NotUtf8)
        );
    }

    #[test]
    fn markdown_loses_its_markup() {
        let md = "# Brief\n\nThe **client** wants [a portal](https://x.test) and `SSO`.\n\n- churn risk\n- invoices\n\n<b>html</b>\n\n```\ncode here\n```\n";
        let e = extract(Format::Markdown, md.as_bytes()).unwrap();
        assert_eq!(
            e.text,
            "Brief\nThe client wants a portal and SSO.\nchurn risk\ninvoices\nhtml\ncode here"
        );
    }

    #[test]
    fn pdf_text_is_extracted() {
        let pdf = minimal_pdf(&[
            "Quarterly churn review (draft)",
            "Clients likely to leave: 12",
        ]);
        let e = extract(Format::Pdf, &pdf).unwrap();
        assert!(
            e.text.contains("Quarterly churn review (draft)"),
            "{:?}",
            e.text
        );
        assert!(
            e.text.contains("Clients likely to leave: 12"),
            "{:?}",
            e.text
        );
    }

    #[test]
    fn a_broken_pdf_is_an_error_not_a_panic() {
        assert!(matches!(
            extract(Format::Pdf, b"%PDF-1.4\ngarbage"),
            Err(ExtractError::Pdf(_))
        ));
        let mut cut = minimal_pdf(&["hello"]);
        cut.truncate(cut.len() / 2);
        assert!(extract(Format::Pdf, &cut).is_err());
    }

    #[test]
    fn long_text_is_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        let e = extract(Format::Text, long.as_bytes()).unwrap();
        assert!(e.truncated);
        assert!(e.text.len() <= MAX_TEXT_BYTES && e.text.len() > MAX_TEXT_BYTES - 4);
    }
}
