//! What the gateway reads of a chat request's body: `model` and `messages`, and nothing else.
//!
//! The lesson: a relay forwards the client's bytes, so it should read only what it decides on.
//! Parsing the body into a `serde_json::Value` builds a tree of maps and owned strings (a copy of
//! every message, of every tool schema) only to look at two fields and throw the tree away.
//! [`ChatHead`] walks the same bytes with serde's visitors instead: the body is still checked to
//! be JSON from end to end (serde_json's own errors, with line and column), but every field other
//! than `model` is skipped as it is read ([`IgnoredAny`]), and `model` is borrowed from the body
//! when it has no escapes. Measured by callgrind in issue 17's commit.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The kind of a JSON value, for the messages that name it ("got an array").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// The kind as a message says it: `null`, `a boolean`, `an array`...
    pub fn article(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }
}

/// A field's value: a string's text, or the kind of anything else (skipped as it is read).
#[derive(Debug)]
pub enum Shape<'a> {
    Str(Cow<'a, str>),
    Other(Kind),
}

impl Shape<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Str(_) => Kind::String,
            Self::Other(kind) => *kind,
        }
    }
}

/// A chat request body as the gateway reads it: an object's `model` and `messages` (the last
/// one when a key repeats, as `serde_json::Value` would keep), or the kind of whatever else the
/// body is.
#[derive(Debug)]
pub enum ChatHead<'a> {
    Object {
        model: Option<Shape<'a>>,
        messages: Option<Kind>,
    },
    Other(Kind),
}

/// Implements the visits of every value that is not a map, the same way for each visitor:
/// strings through `$string`, the rest into `$other(Kind)`, arrays drained without being kept.
macro_rules! visit_scalars_and_arrays {
    ($string:expr, $other:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other(Kind::Null))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other(Kind::Null))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other(Kind::Boolean))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other(Kind::Number))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other(Kind::Number))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other(Kind::Number))
        }
        fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
            Ok($string(Cow::Borrowed(text)))
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok($string(Cow::Owned(text.to_owned())))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($other(Kind::Array))
        }
    };
}

struct ShapeVisitor;

impl<'de> Visitor<'de> for ShapeVisitor {
    type Value = Shape<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    visit_scalars_and_arrays!(Shape::Str, Shape::Other);

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Shape::Other(Kind::Object))
    }
}

impl<'de> Deserialize<'de> for Shape<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ShapeVisitor)
    }
}

/// The keys the gateway reads; any other is skipped without being copied.
enum Key {
    Model,
    Messages,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "model" => Key::Model,
                    "messages" => Key::Messages,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct HeadVisitor;

impl<'de> Visitor<'de> for HeadVisitor {
    type Value = ChatHead<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with `model` and `messages`")
    }

    visit_scalars_and_arrays!(
        |_: Cow<'_, str>| ChatHead::Other(Kind::String),
        ChatHead::Other
    );

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut model, mut messages) = (None, None);
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Model => model = Some(map.next_value::<Shape<'de>>()?),
                Key::Messages => messages = Some(map.next_value::<Shape<'de>>()?.kind()),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ChatHead::Object { model, messages })
    }
}

impl<'de> Deserialize<'de> for ChatHead<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(HeadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(body: &str) -> ChatHead<'_> {
        serde_json::from_str(body).expect(body)
    }

    #[test]
    fn reads_model_and_the_kind_of_messages() {
        let ChatHead::Object { model, messages } =
            head(r#"{"messages":[{"role":"user","content":"hi"}],"x":{"y":[1,2]},"model":"m"}"#)
        else {
            panic!("an object");
        };
        assert!(matches!(model, Some(Shape::Str(Cow::Borrowed("m")))));
        assert_eq!(messages, Some(Kind::Array));
    }

    #[test]
    fn an_escaped_model_is_unescaped_and_the_last_key_wins() {
        let ChatHead::Object { model, .. } = head(r#"{"model":"a","model":"b\u00e9"}"#) else {
            panic!("an object");
        };
        assert!(matches!(model, Some(Shape::Str(m)) if m == "bé"));
    }

    #[test]
    fn names_what_is_not_an_object() {
        for (body, kind) in [
            ("[1]", Kind::Array),
            ("\"s\"", Kind::String),
            ("null", Kind::Null),
            ("1.5", Kind::Number),
            ("true", Kind::Boolean),
        ] {
            assert!(
                matches!(head(body), ChatHead::Other(k) if k == kind),
                "{body}"
            );
        }
    }

    #[test]
    fn the_whole_body_must_still_be_json() {
        for bad in [r#"{"model":"m","x":[1,}"#, r#"{"model":"m"} trailing"#, "{"] {
            assert!(serde_json::from_str::<ChatHead<'_>>(bad).is_err(), "{bad}");
        }
    }
}
