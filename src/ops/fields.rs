//! Typed access to the fields of a request object, with Harper's validation messages
//! (`'table' is required`, `'records' must be an array`, ...). Aliases are tried in order, so
//! legacy names (`schema`, `hash_attribute`, `hash_values`, `search_attribute`, ...) work.

use crate::core::error::OpError;
use serde_json::{Map, Value};

pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        Fields { obj }
    }

    /// The first present, non-null field among `names` (the first name is the canonical one,
    /// used in messages).
    pub fn get(&self, names: &[&str]) -> Option<&'a Value> {
        names
            .iter()
            .filter_map(|n| self.obj.get(*n))
            .find(|v| !v.is_null())
    }

    fn label<'n>(names: &[&'n str]) -> &'n str {
        names.first().copied().unwrap_or("field")
    }

    pub fn opt_str(&self, names: &[&str]) -> Result<Option<String>, OpError> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(OpError::bad_request(format!(
                "'{}' must be a string",
                Self::label(names)
            ))),
        }
    }

    pub fn req_str(&self, names: &[&str]) -> Result<String, OpError> {
        match self.opt_str(names)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(OpError::bad_request(format!(
                "'{}' is required",
                Self::label(names)
            ))),
        }
    }

    /// A name-like field that Harper also accepts as a number (role ids, node names).
    pub fn opt_str_or_number(&self, names: &[&str]) -> Result<Option<String>, OpError> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(OpError::bad_request(format!(
                "'{}' must be a string",
                Self::label(names)
            ))),
        }
    }

    pub fn opt_bool(&self, names: &[&str]) -> Result<Option<bool>, OpError> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(OpError::bad_request(format!(
                "'{}' must be a boolean",
                Self::label(names)
            ))),
        }
    }

    pub fn opt_u64(&self, names: &[&str]) -> Result<Option<u64>, OpError> {
        match self.get(names) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                OpError::bad_request(format!(
                    "'{}' must be a non-negative integer",
                    Self::label(names)
                ))
            }),
        }
    }

    pub fn opt_array(&self, names: &[&str]) -> Result<Option<&'a Vec<Value>>, OpError> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(OpError::bad_request(format!(
                "'{}' must be an array",
                Self::label(names)
            ))),
        }
    }

    pub fn req_array(&self, names: &[&str]) -> Result<&'a Vec<Value>, OpError> {
        self.opt_array(names)?
            .ok_or_else(|| OpError::bad_request(format!("'{}' is required", Self::label(names))))
    }

    pub fn opt_object(&self, names: &[&str]) -> Result<Option<&'a Map<String, Value>>, OpError> {
        match self.get(names) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(OpError::bad_request(format!(
                "'{}' must be an object",
                Self::label(names)
            ))),
        }
    }
}
