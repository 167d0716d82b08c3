//! The routes file format and its parsed, immutable form: a [`RouteTable`] mapping frontend names to
//! their lists, exactly as `frontend:<name>` holds them in Redis (identifier first, then backend URLs).
//!
//! ```json
//! {
//!     "//": "keys starting with // are comments",
//!     "www.example.com": ["mysite", "http://10.0.0.7:8080", "http://10.0.0.8:8080"],
//!     "*.example.org":   ["wildcard-site", "http://10.0.0.9"],
//!     "*":               ["default-site", "http://10.0.0.10:8000"],
//!     "api.example.com": {"backends": ["api", "http://10.0.0.11:8080", "http://10.0.0.12:8080"],
//!                         "options": {"balance": "roundrobin", "weights": "3,1", "hsts": 31536000}}
//! }
//! ```
//!
//! The object form carries, beside the same list (identifier first) under `backends`, the frontend's
//! options (README "Per-frontend options": the fields of `frontend-options:<name>` in Redis). Options
//! are checked like the rest: an unknown field or a bad value is an error naming frontend and field.
//!
//! Parsing is strict and streams straight into the table (no intermediate JSON tree): every problem is
//! an error carrying the line and column where it was found, never a panic. A table is built on the
//! watcher thread and then only read, by every worker, through an `Arc`; looking a host up in it does no
//! I/O and takes no lock. Nothing here knows about dead marks or the route cache.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::dataplane::routing::host::for_each_candidate;
use crate::dataplane::routing::route::parse_backend_url;

/// One frontend's list: element 0 the identifier, then backend URLs. Never empty.
pub type FrontendList = Arc<[String]>;

/// The frontends of one version of the routes file.
#[derive(Debug, Default)]
pub struct RouteTable {
    frontends: HashMap<Box<str>, FrontendList>,
    /// The options of frontends written in the object form, as field/value text.
    options: HashMap<Box<str>, Arc<[(String, String)]>>,
    /// Entries that are valid but can never match a request (logged when the table is loaded).
    warnings: Vec<String>,
}

/// Why a routes file cannot be used: the file, where in it (1-based line and column, when known), what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesFileError {
    pub path: PathBuf,
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for RoutesFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "routes file {}: line {line}, column {column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "routes file {}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for RoutesFileError {}

impl RouteTable {
    /// Reads and parses the routes file at `path`.
    pub fn load(path: &Path) -> Result<RouteTable, RoutesFileError> {
        let bytes = std::fs::read(path).map_err(|e| RoutesFileError {
            path: path.to_path_buf(),
            position: None,
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &bytes)
    }

    /// Parses the content of a routes file (`path` only names it in errors).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<RouteTable, RoutesFileError> {
        // Some editors start UTF-8 files with a byte-order mark; JSON does not allow one.
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let table = TableSeed
            .deserialize(&mut de)
            .and_then(|table| de.end().map(|()| table))
            .map_err(|e| json_error(path, &e))?;
        Ok(table)
    }

    /// Number of frontends.
    pub fn len(&self) -> usize {
        self.frontends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// Entries that can never match (upper-case letters, a trailing dot), one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The list of a frontend name, exactly as written in the file.
    pub fn get(&self, name: &str) -> Option<&FrontendList> {
        self.frontends.get(name)
    }

    /// The option fields of frontend `name` (empty without options).
    pub fn options(&self, name: &str) -> &[(String, String)] {
        self.options.get(name).map_or(&[], |o| &o[..])
    }

    /// The first candidate of a normalised host that has a list (docs/compatibility.md §2: exact, `*.suffix` longest
    /// first, `*`), with the key that matched. The same candidate order as the Redis driver, from
    /// [`for_each_candidate`].
    pub fn find(&self, host: &str) -> Option<(&str, &FrontendList)> {
        let mut found = None;
        for_each_candidate(host, |key| {
            if found.is_none() {
                found = self
                    .frontends
                    .get_key_value(key)
                    .map(|(k, list)| (&**k, list));
            }
        });
        found
    }
}

/// serde_json's message without its " at line L column C" suffix, which we print our own way.
fn json_error(path: &Path, e: &serde_json::Error) -> RoutesFileError {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    RoutesFileError {
        path: path.to_path_buf(),
        position: (e.line() > 0).then_some((e.line(), e.column())),
        message,
    }
}

/// The whole file: one JSON object.
struct TableSeed;

impl<'de> DeserializeSeed<'de> for TableSeed {
    type Value = RouteTable;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<RouteTable, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TableSeed {
    type Value = RouteTable;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an object mapping frontend names to lists (identifier first, then backend URLs)",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RouteTable, A::Error> {
        let mut table = RouteTable::default();
        while let Some(name) = map.next_key::<String>()? {
            // "//" keys are comments: a host name never contains '/', so no frontend is lost.
            if name.starts_with("//") {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if name.is_empty() {
                return Err(de::Error::custom("a frontend name is empty"));
            }
            if table.frontends.contains_key(name.as_str()) {
                return Err(de::Error::custom(format!(
                    "frontend {name:?} appears twice"
                )));
            }
            let (list, options) = map.next_value_seed(FrontendSeed { name: &name })?;
            if !options.is_empty() {
                table
                    .options
                    .insert(name.clone().into_boxed_str(), options.into());
            }
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                table.warnings.push(format!(
                    "frontend {name:?} has upper-case letters and never matches: hosts are lower-cased before the look-up; write {:?}",
                    name.to_ascii_lowercase()
                ));
            } else if name.len() > 1 && name.ends_with('.') {
                table.warnings.push(format!(
                    "frontend {name:?} ends with a dot and never matches: the trailing dot of a host is dropped before the look-up"
                ));
            }
            table.frontends.insert(name.into_boxed_str(), list.into());
        }
        Ok(table)
    }
}

/// One frontend: its list, or `{"backends": <list>, "options": {...}}`.
struct FrontendSeed<'a> {
    name: &'a str,
}

type FrontendValue = (Vec<String>, Vec<(String, String)>);

impl<'de> DeserializeSeed<'de> for FrontendSeed<'_> {
    type Value = FrontendValue;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<FrontendValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FrontendSeed<'_> {
    type Value = FrontendValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a list for frontend {:?} (its identifier, then backend URLs), or an object with \"backends\" (that list) and \"options\"",
            self.name
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<FrontendValue, A::Error> {
        let list = ListSeed { name: self.name }.visit_seq(seq)?;
        Ok((list, Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FrontendValue, A::Error> {
        let name = self.name;
        let mut list: Option<Vec<String>> = None;
        let mut options = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "backends" if list.is_none() => {
                    list = Some(map.next_value_seed(ListSeed { name })?);
                }
                "options" => {
                    let obj: serde_json::Map<String, serde_json::Value> = map.next_value()?;
                    for (field, value) in obj {
                        let text = match value {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Number(n) => n.to_string(),
                            serde_json::Value::Bool(b) => u8::from(b).to_string(),
                            serde_json::Value::Array(items) => items
                                .iter()
                                .map(|i| match i {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(","),
                            other => other.to_string(),
                        };
                        crate::dataplane::routing::options::check_field(&field, &text)
                            .map_err(|e| de::Error::custom(format!("frontend {name:?}: options: {e}")))?;
                        options.push((field, text));
                    }
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "frontend {name:?}: unknown key {other:?} (an object holds \"backends\" and \"options\")"
                    )))
                }
            }
        }
        let list = list.ok_or_else(|| {
            de::Error::custom(format!(
                "frontend {name:?}: the object has no \"backends\" list"
            ))
        })?;
        if let Some((_, w)) = options.iter().find(|(f, _)| f == "weights") {
            if w.split(',').count() > list.len().saturating_sub(1) {
                return Err(de::Error::custom(format!(
                    "frontend {name:?}: options: field \"weights\": more weights than the {} backends",
                    list.len().saturating_sub(1)
                )));
            }
        }
        Ok((list, options))
    }
}

/// One frontend's list.
struct ListSeed<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = Vec<String>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a list for frontend {:?}: its identifier, then backend URLs",
            self.name
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(2).min(64));
        while let Some(item) = seq.next_element_seed(ItemSeed {
            name: self.name,
            index: list.len(),
        })? {
            list.push(item);
        }
        if list.is_empty() {
            return Err(de::Error::custom(format!(
                "frontend {:?} has an empty list: it needs at least its identifier (remove the frontend to stop serving it)",
                self.name
            )));
        }
        Ok(list)
    }
}

/// One element of a list: the identifier (any string) or a backend URL (checked here, so that the error
/// points at it).
struct ItemSeed<'a> {
    name: &'a str,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.index == 0 {
            write!(f, "the identifier string of frontend {:?}", self.name)
        } else {
            write!(
                f,
                "a backend URL string (frontend {:?}, element {})",
                self.name, self.index
            )
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if self.index > 0 {
            parse_backend_url(v)
                .map_err(|e| E::custom(format!("frontend {:?}: {e}", self.name)))?;
        }
        Ok(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RouteTable, RoutesFileError> {
        RouteTable::parse(Path::new("/etc/routes.json"), text.as_bytes())
    }

    #[test]
    fn candidates_in_the_shared_order() {
        let t = parse(
            r#"{
                "//": "a comment",
                "www.a.com": ["site", "http://10.0.0.1:80"],
                "*.a.com": ["wild", "http://10.0.0.2"],
                "*.x.a.com": ["deeper", "10.0.0.3:81"],
                "*": ["all", "http://10.0.0.4"],
                "only-id.com": ["lonely"]
            }"#,
        )
        .unwrap();
        assert_eq!(t.len(), 5);
        let key = |h: &str| t.find(h).map(|(k, _)| k.to_string());
        assert_eq!(key("www.a.com").as_deref(), Some("www.a.com"));
        assert_eq!(key("b.a.com").as_deref(), Some("*.a.com"));
        assert_eq!(key("q.x.a.com").as_deref(), Some("*.x.a.com"));
        assert_eq!(key("a.com").as_deref(), Some("*"));
        assert_eq!(key("only-id.com").as_deref(), Some("only-id.com"));
        assert_eq!(t.find("only-id.com").unwrap().1.len(), 1);
        assert!(t.warnings().is_empty());
        let (_, list) = t.find("www.a.com").unwrap();
        assert_eq!(&list[..], ["site", "http://10.0.0.1:80"]);
    }

    #[test]
    fn no_catch_all_means_no_match() {
        let t = parse(r#"{"a.com": ["a", "http://h:1"]}"#).unwrap();
        assert!(t.find("b.com").is_none());
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn errors_carry_line_and_column() {
        let err =
            parse("{\n  \"a.com\": [\"a\", \"http://h:1\"]\n  \"b.com\": [\"b\"]\n}").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        assert!(err
            .to_string()
            .starts_with("routes file /etc/routes.json: line 3, column"));

        let err =
            parse("{\n \"a.com\": [\"a\",\n   \"not a url\",\n   \"http://h:1\"]\n}").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
        assert!(err.message.contains("not a url"), "{err}");
        assert!(err.message.contains("\"a.com\""), "{err}");

        let err = parse("{\"a.com\": [\"a\", 5]}").unwrap_err();
        assert!(err.message.contains("backend URL string"), "{err}");
        let err = parse("{\"a.com\": \"http://h:1\"}").unwrap_err();
        assert!(
            err.message.contains("a list for frontend \"a.com\""),
            "{err}"
        );
        let err = parse("{\"a.com\": []}").unwrap_err();
        assert!(err.message.contains("empty list"), "{err}");
        let err = parse("{\"a.com\": [\"a\"],\n\"a.com\": [\"b\"]}").unwrap_err();
        assert!(err.message.contains("appears twice"), "{err}");
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
        let err = parse("[\"a\"]").unwrap_err();
        assert!(err.message.contains("an object mapping"), "{err}");
        let err = parse("").unwrap_err();
        assert!(err.message.contains("EOF"), "{err}");
        let err = parse("{} {}").unwrap_err();
        assert!(err.message.contains("trailing"), "{err}");
        let err = parse("{\"\": [\"x\"]}").unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
        assert!(parse("\u{feff}{}").unwrap().is_empty());
        let bad_utf8 = RouteTable::parse(Path::new("r"), b"{\"a\xff\": [\"x\"]}");
        assert!(bad_utf8.is_err());
    }

    #[test]
    fn object_form_carries_options() {
        let t = parse(
            r#"{"a.com": {"backends": ["a", "http://h:1", "http://h:2"],
                          "options": {"balance": "roundrobin", "weights": [3, 1], "hsts": 60, "maintenance": false}},
                "b.com": ["b", "http://h:3"]}"#,
        )
        .unwrap();
        assert_eq!(t.get("a.com").unwrap().len(), 3);
        let o = t.options("a.com");
        assert!(o.contains(&("weights".into(), "3,1".into())), "{o:?}");
        assert!(o.contains(&("maintenance".into(), "0".into())), "{o:?}");
        assert!(t.options("b.com").is_empty());
        let err = parse(
            r#"{"a.com": {"backends": ["a", "http://h:1"], "options": {"balance": "best"}}}"#,
        )
        .unwrap_err();
        assert!(err.message.contains("balance"), "{err}");
        let err =
            parse(r#"{"a.com": {"backends": ["a", "http://h:1"], "options": {"weights": "1,1"}}}"#)
                .unwrap_err();
        assert!(err.message.contains("weights"), "{err}");
        let err = parse(r#"{"a.com": {"options": {}}}"#).unwrap_err();
        assert!(err.message.contains("no \"backends\""), "{err}");
        let err = parse(r#"{"a.com": {"backend": []}}"#).unwrap_err();
        assert!(err.message.contains("unknown key"), "{err}");
    }

    #[test]
    fn names_that_never_match_are_warned_about() {
        let t = parse(r#"{"WWW.a.com": ["x"], "b.com.": ["y"]}"#).unwrap();
        assert_eq!(t.warnings().len(), 2, "{:?}", t.warnings());
        assert!(t.warnings()[0].contains("\"www.a.com\""));
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = RouteTable::load(Path::new("/nonexistent/routes.json")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "routes file /nonexistent/routes.json: cannot read it: No such file or directory (os error 2)"
        );
    }
}
