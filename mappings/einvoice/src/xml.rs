//! A tiny XML writer: elements with escaped text, empty values skipped (EN 16931 / PEPPOL-R008
//! forbid empty elements), amounts with two decimals.

use rust_decimal::Decimal;

pub struct Xml {
    out: String,
    stack: Vec<&'static str>,
}

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => {}
            c => o.push(c),
        }
    }
    o
}

/// An amount with exactly two decimals.
pub fn amount(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r.to_string()
}

/// A quantity or price: as precise as it is, at least two decimals for prices.
pub fn number(d: Decimal, min_scale: u32) -> String {
    let mut n = d.normalize();
    if n.scale() < min_scale {
        n.rescale(min_scale);
    }
    n.to_string()
}

impl Xml {
    pub fn new() -> Self {
        Self {
            out: String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"),
            stack: Vec::new(),
        }
    }
    fn indent(&mut self) {
        for _ in 0..self.stack.len() {
            self.out.push_str("  ");
        }
    }
    /// Opens an element with attributes (values escaped).
    pub fn open_with(&mut self, tag: &'static str, attrs: &[(&str, &str)]) {
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        self.out.push_str(">\n");
        self.stack.push(tag);
    }
    pub fn open(&mut self, tag: &'static str) {
        self.open_with(tag, &[]);
    }
    pub fn close(&mut self) {
        if let Some(tag) = self.stack.pop() {
            self.indent();
            self.out.push_str(&format!("</{tag}>\n"));
        }
    }
    /// A leaf element with text and attributes; nothing when the text is empty.
    pub fn leaf_with(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) {
        let t = text.trim();
        if t.is_empty() {
            return;
        }
        self.indent();
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        self.out.push('>');
        self.out.push_str(&escape(t));
        self.out.push_str(&format!("</{tag}>\n"));
    }
    pub fn leaf(&mut self, tag: &str, text: &str) {
        self.leaf_with(tag, &[], text);
    }
    /// An element that may legitimately be empty in the syntax (CII's header delivery).
    pub fn empty(&mut self, tag: &str) {
        self.indent();
        self.out.push_str(&format!("<{tag}/>\n"));
    }
    pub fn finish(mut self) -> String {
        while !self.stack.is_empty() {
            self.close();
        }
        self.out
    }
}
