//! Maps between config field paths (`vip[0].backend[2].weight`) and places in the file,
//! so that every error names both the line and the field: parse errors come with a byte
//! span (we find the field around it), validation errors come with a field (we find its
//! line). The serde structs stay plain types; the spans come from re-reading the text.

use std::fmt;
use std::ops::Range;

use toml_edit::{Array, ArrayOfTables, ImDocument, Item, Table, TableLike, Value};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A field path, displayed as `vip[0].backend[2].weight`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    pub fn key(&self, k: &str) -> FieldPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_string()));
        FieldPath(v)
    }
    pub fn index(&self, i: usize) -> FieldPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        FieldPath(v)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.chars().count(), |nl| {
        before[nl + 1..].chars().count()
    }) + 1;
    (line, col)
}

/// A place in the document: an item, or a table of an array of tables (which toml_edit
/// hands out as `&Table`, not `&Item`).
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(i) => i.as_table_like(),
            Node::Table(t) => Some(t),
        }
    }
    fn aot(self) -> Option<&'a ArrayOfTables> {
        match self {
            Node::Item(i) => i.as_array_of_tables(),
            Node::Table(_) => None,
        }
    }
    fn array(self) -> Option<&'a Array> {
        match self {
            Node::Item(i) => i.as_array(),
            Node::Table(_) => None,
        }
    }
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::Value(v)) => v.span(),
            Node::Item(Item::Table(t)) | Node::Table(t) => t.span(),
            Node::Item(Item::ArrayOfTables(a)) => a.span(),
            Node::Item(Item::None) => None,
        }
    }
    fn is_container(self) -> bool {
        matches!(
            self,
            Node::Table(_) | Node::Item(Item::Table(_)) | Node::Item(Item::ArrayOfTables(_))
        )
    }
}

/// Where `path` is written: its value if present, else the deepest enclosing part that is
/// (e.g. the `[[vip]]` header when a defaulted field is wrong).
pub fn span_of(doc: &ImDocument<&str>, path: &FieldPath) -> Option<Range<usize>> {
    let mut node = Node::Item(doc.as_item());
    let mut best: Option<Range<usize>> = None;
    for seg in &path.0 {
        let next = match seg {
            Seg::Key(k) => node
                .table_like()
                .and_then(|t| t.get_key_value(k))
                .map(|(key, it)| {
                    let n = Node::Item(it);
                    (n.span().or_else(|| key.span()), n)
                }),
            Seg::Index(i) => {
                if let Some(aot) = node.aot() {
                    aot.get(*i).map(|t| (t.span(), Node::Table(t)))
                } else {
                    return node
                        .array()
                        .and_then(|a| a.get(*i))
                        .and_then(Value::span)
                        .or(best);
                }
            }
        };
        let Some((span, n)) = next else { break };
        if span.is_some() {
            best = span;
        }
        node = n;
    }
    best
}

/// The innermost field whose text contains byte `offset`.
pub fn path_at(doc: &ImDocument<&str>, offset: usize) -> Option<FieldPath> {
    let mut best: Option<(usize, FieldPath)> = None;
    walk(
        Node::Item(doc.as_item()),
        &FieldPath::default(),
        offset,
        &mut best,
    );
    best.map(|(_, p)| p)
}

fn consider(
    range: Option<Range<usize>>,
    path: &FieldPath,
    offset: usize,
    best: &mut Option<(usize, FieldPath)>,
) {
    if let Some(r) = range {
        if r.start <= offset && offset < r.end.max(r.start + 1) {
            let len = r.end - r.start;
            if best.as_ref().is_none_or(|(l, _)| len <= *l) {
                *best = Some((len, path.clone()));
            }
        }
    }
}

fn walk(node: Node<'_>, path: &FieldPath, offset: usize, best: &mut Option<(usize, FieldPath)>) {
    if let Some(aot) = node.aot() {
        for (i, t) in aot.iter().enumerate() {
            let p = path.index(i);
            consider(t.span(), &p, offset, best);
            walk(Node::Table(t), &p, offset, best);
        }
    } else if let Some(t) = node.table_like() {
        for (k, _) in t.iter() {
            let Some((key, child)) = t.get_key_value(k) else {
                continue;
            };
            let child = Node::Item(child);
            let p = path.key(k);
            let range = if child.is_container() {
                child.span()
            } else {
                match (key.span(), child.span()) {
                    (Some(ks), Some(vs)) => Some(ks.start..vs.end.max(ks.end)),
                    (ks, vs) => ks.or(vs),
                }
            };
            consider(range, &p, offset, best);
            walk(child, &p, offset, best);
        }
    } else if let Some(arr) = node.array() {
        for (i, v) in arr.iter().enumerate() {
            consider(v.span(), &path.index(i), offset, best);
        }
    }
}
