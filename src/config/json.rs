//! Typed access to one JSON object of the configuration, with errors that carry the full key path
//! (`server.lruCache.ttl`). Only reading and type checking; defaults and ranges live in `config`.

use std::time::Duration;

use serde_json::{Map, Value};

/// (full key path, message)
pub type KeyError = (String, String);

/// One object of the configuration and its path from the root.
pub struct Section<'a> {
    path: String,
    obj: &'a Map<String, Value>,
}

impl<'a> Section<'a> {
    pub fn new(path: &str, obj: &'a Map<String, Value>) -> Self {
        Section {
            path: path.to_string(),
            obj,
        }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; JSON `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, KeyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(v) => Err((
                self.key(key),
                format!("expected true or false, found {}", v.render()),
            )),
        }
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>, KeyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err((
                self.key(key),
                format!("expected a string, found {}", v.render()),
            )),
        }
    }

    /// A non-negative integer (a numeric string is accepted, as templated configs often produce them).
    pub fn opt_count(&self, key: &str) -> Result<Option<usize>, KeyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                n.and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        (
                            self.key(key),
                            format!("expected a non-negative integer, found {}", v.render()),
                        )
                    })
            }
        }
    }

    /// Seconds (fractions allowed). `Ok(None)`: absent; `Ok(Some(None))`: zero, meaning "none" or
    /// "disabled" depending on the key; `Ok(Some(Some(d)))`: a positive duration.
    pub fn opt_seconds(&self, key: &str) -> Result<Option<Option<Duration>>, KeyError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                let secs = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                match secs {
                    Some(0.0) => Ok(Some(None)),
                    Some(s) if s.is_finite() && s > 0.0 && s <= 1e7 => {
                        Ok(Some(Some(Duration::from_secs_f64(s))))
                    }
                    _ => Err((
                        self.key(key),
                        format!("expected a number of seconds, found {}", v.render()),
                    )),
                }
            }
        }
    }
}

/// Short descriptions of JSON values for error messages.
pub trait ValueExt {
    fn kind(&self) -> &'static str;
    fn render(&self) -> String;
}

impl ValueExt for Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        }
    }

    fn render(&self) -> String {
        let text = self.to_string();
        if text.len() > 60 {
            format!(
                "{} ({}...)",
                self.kind(),
                &text[..text.char_indices().nth(50).map_or(text.len(), |(i, _)| i)]
            )
        } else {
            format!("{} ({text})", self.kind())
        }
    }
}
