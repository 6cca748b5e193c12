//! A small, safe XML tree for reading partner documents.
//!
//! The bytes are decoded as the XML declaration says (UTF-8 by default, ISO-8859-1 and
//! Windows-1252 via `encoding_rs`), then parsed with `quick-xml` into a tree of elements keyed
//! by their *local* names, so `bme:PARTY_ID`, `bmecat:PARTY_ID` and an unprefixed `PARTY_ID`
//! are the same thing. A document declared ISO-8859-1 whose bytes are valid multi-byte UTF-8
//! is read as UTF-8 (the openTRANS reference sample is such a file). Refused: a `<!DOCTYPE …>` (which is where entity declarations live),
//! any entity reference other than the five predefined ones and character references,
//! nesting deeper than [`MAX_DEPTH`] and more than [`MAX_ELEMENTS`] elements.

use crate::ReadError;
use quick_xml::events::Event;
use quick_xml::Reader;

pub const MAX_DEPTH: usize = 64;
pub const MAX_ELEMENTS: usize = 200_000;

/// One element: local name, attributes (local names), its text and its child elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// All children with this local name.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// The element at a path of local names below this one.
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        let mut e = self;
        for p in path {
            e = e.child(p)?;
        }
        Some(e)
    }
    /// The trimmed, non-empty text of the child at `path`.
    pub fn text_at(&self, path: &[&str]) -> Option<String> {
        self.at(path).and_then(Element::value)
    }
    /// This element's trimmed text, `None` if empty.
    pub fn value(&self) -> Option<String> {
        let t = self.text.trim();
        (!t.is_empty()).then(|| t.to_string())
    }
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The encoding named in the XML declaration, if any.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(200)];
    let head = String::from_utf8_lossy(head);
    let decl = head.strip_prefix("<?xml")?;
    let end = decl.find("?>")?;
    let decl = &decl[..end];
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
    let rest = &rest[1..];
    let close = rest.find(quote)?;
    Some(rest[..close].to_string())
}

/// Decodes the document to text as declared.
pub fn decode(bytes: &[u8]) -> Result<String, ReadError> {
    if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        return String::from_utf8(rest.to_vec())
            .map_err(|e| ReadError::malformed("/", format!("not valid UTF-8: {e}")));
    }
    let trimmed = {
        let start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(0);
        &bytes[start..]
    };
    match declared_encoding(trimmed) {
        None => String::from_utf8(bytes.to_vec()).map_err(|e| {
            ReadError::malformed(
                "/",
                format!("not valid UTF-8 (and no other encoding declared): {e}"),
            )
        }),
        Some(label) => {
            let enc = encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
                ReadError::malformed("/?xml/@encoding", format!("unknown encoding {label:?}"))
            })?;
            if enc == encoding_rs::UTF_8 {
                return String::from_utf8(bytes.to_vec()).map_err(|e| {
                    ReadError::malformed("/", format!("declared UTF-8 but not valid UTF-8: {e}"))
                });
            }
            if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
                return Err(ReadError::malformed(
                    "/?xml/@encoding",
                    "UTF-16 documents are not supported; send UTF-8 or ISO-8859-1",
                ));
            }
            // Mislabelled documents are common: a file declared ISO-8859-1 whose bytes are
            // well-formed UTF-8 with multi-byte sequences (genuine Latin-1 text almost never
            // is) was written as UTF-8; reading it as Latin-1 would turn "ü" into "Ã¼".
            if (enc == encoding_rs::WINDOWS_1252 || label.eq_ignore_ascii_case("iso-8859-15"))
                && !bytes.is_ascii()
            {
                if let Ok(text) = std::str::from_utf8(bytes) {
                    return Ok(text.to_string());
                }
            }
            let (text, _, had_errors) = enc.decode(bytes);
            if had_errors {
                return Err(ReadError::malformed(
                    "/",
                    format!("bytes that are not valid {label}"),
                ));
            }
            Ok(text.into_owned())
        }
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => name.into_owned(),
    }
}

fn path_of(stack: &[Element]) -> String {
    let mut p = String::new();
    for e in stack {
        p.push('/');
        p.push_str(&e.name);
    }
    if p.is_empty() {
        p.push('/');
    }
    p
}

/// Parses a document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, ReadError> {
    let text = decode(bytes)?;
    let mut reader = Reader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let open =
        |e: &quick_xml::events::BytesStart<'_>, stack: &[Element]| -> Result<Element, ReadError> {
            let mut el = Element {
                name: local(e.name().as_ref()),
                ..Default::default()
            };
            for a in e.attributes() {
                let a = a.map_err(|err| {
                    ReadError::malformed(path_of(stack), format!("bad attribute: {err}"))
                })?;
                let key = local(a.key.as_ref());
                if key == "xmlns" || a.key.as_ref().starts_with(b"xmlns:") {
                    continue;
                }
                let v = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|err| {
                        ReadError::refused(
                            format!("{}/@{key}", path_of(stack)),
                            format!("attribute value with an undeclared entity: {err}"),
                        )
                    })?;
                el.attrs.push((key, v.into_owned()));
            }
            Ok(el)
        };
    loop {
        let ev = reader.read_event().map_err(|e| {
            ReadError::malformed(
                path_of(&stack),
                format!(
                    "not well-formed XML at byte {}: {e}",
                    reader.buffer_position()
                ),
            )
        })?;
        match ev {
            Event::DocType(_) => {
                return Err(ReadError::refused(
                    "/!DOCTYPE",
                    "documents with a DTD or entity declarations are refused",
                ))
            }
            Event::Start(e) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(ReadError::refused(
                        path_of(&stack),
                        format!("document too deep or too large (limits: depth {MAX_DEPTH}, {MAX_ELEMENTS} elements)"),
                    ));
                }
                if root.is_some() {
                    return Err(ReadError::malformed("/", "more than one root element"));
                }
                let el = open(&e, &stack)?;
                stack.push(el);
            }
            Event::Empty(e) => {
                // A self-closing element counts like any other (`<x/>` × 500,000 is refused).
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(ReadError::refused(
                        path_of(&stack),
                        format!("document too deep or too large (limits: depth {MAX_DEPTH}, {MAX_ELEMENTS} elements)"),
                    ));
                }
                if root.is_some() {
                    return Err(ReadError::malformed("/", "more than one root element"));
                }
                let el = open(&e, &stack)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(ReadError::malformed("/", "unexpected end tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                if !stack.is_empty() {
                    let s = t.decode().map_err(|e| {
                        ReadError::malformed(path_of(&stack), format!("bad text: {e}"))
                    })?;
                    if let Some(cur) = stack.last_mut() {
                        cur.text.push_str(&s);
                    }
                } else if !t.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(ReadError::malformed("/", "text outside the root element"));
                }
            }
            Event::CData(t) => {
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Event::GeneralRef(r) => {
                let resolved = if r.is_char_ref() {
                    r.resolve_char_ref().ok().flatten().map(|c| c.to_string())
                } else {
                    let name = String::from_utf8_lossy(&r).into_owned();
                    quick_xml::escape::resolve_predefined_entity(&name).map(str::to_string)
                };
                let Some(s) = resolved else {
                    return Err(ReadError::refused(
                        path_of(&stack),
                        format!(
                            "entity reference &{}; is not one of the predefined XML entities",
                            String::from_utf8_lossy(&r)
                        ),
                    ));
                };
                if let Some(cur) = stack.last_mut() {
                    cur.text.push_str(&s);
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(ReadError::malformed(
            path_of(&stack),
            "the document ends before this element is closed",
        ));
    }
    root.ok_or_else(|| ReadError::malformed("/", "no root element"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_closing_elements_count_towards_the_element_limit() {
        let many = |n: usize| format!("<r>{}</r>", "<x/>".repeat(n)).into_bytes();
        assert!(parse(&many(MAX_ELEMENTS - 1)).is_ok());
        let err = parse(&many(500_000)).unwrap_err();
        assert!(matches!(err, ReadError::Refused { .. }), "{err:?}");
    }

    #[test]
    fn local_names_and_entities() {
        let doc = br#"<?xml version="1.0"?><a:R xmlns:a="urn:x"><a:B t="x&amp;y">1 &lt; 2 &#252;</a:B><C/></a:R>"#;
        let r = parse(doc).unwrap();
        assert_eq!(r.name, "R");
        assert_eq!(r.text_at(&["B"]).unwrap(), "1 < 2 ü");
        assert_eq!(r.child("B").unwrap().attr("t"), Some("x&y"));
        assert!(r.child("C").is_some());
    }

    #[test]
    fn refuses_dtd_and_unknown_entities() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert!(matches!(parse(bomb), Err(ReadError::Refused { .. })));
        let undeclared = br#"<a>&xxe;</a>"#;
        assert!(matches!(parse(undeclared), Err(ReadError::Refused { .. })));
    }

    #[test]
    fn broken_documents_are_malformed() {
        for doc in [&b"<a><b></a>"[..], b"<a>", b"<a></a><b/>", b"<a x='1></a>"] {
            let err = parse(doc).unwrap_err();
            assert!(
                matches!(err, ReadError::Malformed { .. }),
                "{doc:?}: {err:?}"
            );
        }
    }

    #[test]
    fn honours_declared_latin1() {
        let doc = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>M\xFCller</a>";
        assert_eq!(parse(doc).unwrap().value().unwrap(), "Müller");
        let bad = b"<?xml version=\"1.0\"?><a>M\xFCller</a>";
        assert!(parse(bad).is_err());
    }

    #[test]
    fn odd_declarations_do_not_panic() {
        for doc in [
            "<?xml version=\"1.0\" encoding=ü?><a/>".as_bytes(),
            b"<?xml encoding=\"\"?><a/>",
            b"<?xml encoding=\"x",
            b"<?xml",
        ] {
            let _ = parse(doc);
        }
    }

    #[test]
    fn refuses_deep_nesting() {
        let doc = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            parse(doc.as_bytes()),
            Err(ReadError::Refused { .. })
        ));
    }
}
