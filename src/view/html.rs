//! The self-contained HTML page of a report: sections of generated summary sentences, tables
//! and figures (images beside the page). Owns markup and escaping only; what goes into a
//! section is decided by `report`.

use serde::Serialize;
use std::fmt::Write;

/// A table: header row and body rows, all already formatted as text.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Table {
    /// Caption above the table.
    pub caption: String,
    /// Column headers.
    pub headers: Vec<String>,
    /// Body rows (each as long as `headers`).
    pub rows: Vec<Vec<String>>,
}

/// A figure: a PNG shown inline (path relative to the page) with its SVG linked beside it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figure {
    /// PNG path relative to the HTML file.
    pub png: String,
    /// SVG path relative to the HTML file.
    pub svg: String,
    /// Caption under the image.
    pub caption: String,
}

/// One section of the page (a pair, usually).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Section {
    /// Anchor id (letters, digits, `-`).
    pub id: String,
    /// Heading.
    pub title: String,
    /// Generated summary sentences (plain text).
    pub summary: Vec<String>,
    /// Tables.
    pub tables: Vec<Table>,
    /// Figures.
    pub figures: Vec<Figure>,
    /// Notes shown after the figures (plain text).
    pub notes: Vec<String>,
    /// Sub-sections after the notes, each under its own heading.
    pub groups: Vec<Group>,
}

/// A sub-section of a [`Section`]: a heading, then tables, figures and notes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Group {
    /// Heading (an `h3`, or the `summary` line when `collapsed`).
    pub title: String,
    /// Tables.
    pub tables: Vec<Table>,
    /// Figures.
    pub figures: Vec<Figure>,
    /// Notes shown after the figures (plain text).
    pub notes: Vec<String>,
    /// Shown folded (`<details>`) until the reader opens it.
    pub collapsed: bool,
}

/// Escape text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Keep only characters that are safe in an id / file name.
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #aaa}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:right}\
th{background:#eee}td:first-child,th:first-child{text-align:left}caption{text-align:left;font-weight:bold;padding:4px 0}\
figure{display:inline-block;margin:0.5em;vertical-align:top}figure img{max-width:520px;border:1px solid #ddd}\
figcaption{font-size:0.85em;max-width:520px}.summary li{margin:0.3em 0}nav a{margin-right:1em}.note{color:#555;font-size:0.9em}\
h3{margin:1.2em 0 0.3em}details{margin:0.8em 0}summary{cursor:pointer;font-weight:bold;margin:0.4em 0}";

/// The whole page. Every piece of text is escaped here.
pub fn page(title: &str, intro: &[String], sections: &[Section]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    for p in intro {
        let _ = writeln!(h, "<p>{}</p>", escape(p));
    }
    h.push_str("<nav>");
    for s in sections {
        let _ = write!(
            h,
            "<a href=\"#{}\">{}</a>",
            escape(&slug(&s.id)),
            escape(&s.title)
        );
    }
    h.push_str("</nav>\n");
    for s in sections {
        let _ = writeln!(
            h,
            "<section id=\"{}\">\n<h2>{}</h2>",
            escape(&slug(&s.id)),
            escape(&s.title)
        );
        if !s.summary.is_empty() {
            h.push_str("<ul class=\"summary\">\n");
            for line in &s.summary {
                let _ = writeln!(h, "<li>{}</li>", escape(line));
            }
            h.push_str("</ul>\n");
        }
        body(&mut h, &s.tables, &s.figures, &s.notes);
        for g in &s.groups {
            if g.collapsed {
                let _ = writeln!(h, "<details>\n<summary>{}</summary>", escape(&g.title));
            } else {
                let _ = writeln!(h, "<h3>{}</h3>", escape(&g.title));
            }
            body(&mut h, &g.tables, &g.figures, &g.notes);
            if g.collapsed {
                h.push_str("</details>\n");
            }
        }
        h.push_str("</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Tables, figures and notes, in that order.
fn body(h: &mut String, tables: &[Table], figures: &[Figure], notes: &[String]) {
    for t in tables {
        let _ = write!(
            h,
            "<table>\n<caption>{}</caption>\n<tr>",
            escape(&t.caption)
        );
        for c in &t.headers {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr>\n");
        for r in &t.rows {
            h.push_str("<tr>");
            for c in r {
                let _ = write!(h, "<td>{}</td>", escape(c));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    for f in figures {
        let _ = writeln!(
                h,
                "<figure><a href=\"{svg}\"><img src=\"{png}\" alt=\"{cap}\"/></a><figcaption>{cap} (<a href=\"{svg}\">SVG</a>)</figcaption></figure>",
                svg = escape(&f.svg),
                png = escape(&f.png),
                cap = escape(&f.caption)
            );
    }
    for n in notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_text_field() {
        let evil = "<script>alert('x')</script> & \"q\"";
        let s = Section {
            id: evil.into(),
            title: evil.into(),
            summary: vec![evil.into()],
            tables: vec![Table {
                caption: evil.into(),
                headers: vec![evil.into()],
                rows: vec![vec![evil.into()]],
            }],
            figures: vec![Figure {
                png: evil.into(),
                svg: evil.into(),
                caption: evil.into(),
            }],
            notes: vec![evil.into()],
            groups: vec![Group {
                title: evil.into(),
                notes: vec![evil.into()],
                collapsed: true,
                ..Group::default()
            }],
        };
        let h = page(evil, &[evil.into()], &[s]);
        assert!(!h.contains("<script>"), "{h}");
        assert!(!h.contains("'x'"));
        assert!(h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"));
    }
}
