//! The census of an OTLP/JSON export ([`crate::census`]): serde over the paths that lead to
//! spans, attributes and nested values, every other value ignored without being built.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::census::{Census, Limits, MAX_DEPTH, Refused};

/// The message a JSON value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    /// `idKeys` / `descriptionKeys`: repeated strings.
    Strings,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    KeyValue,
    AnyValue,
    Array,
    /// A value inside an array.
    ArrayItem,
    KvList,
}

struct Counter<'l> {
    census: Census,
    limits: &'l Limits,
    /// Why the walk stopped early, when a limit did it.
    stop: Option<Refused>,
}

impl Counter<'_> {
    fn refuse<E: serde::de::Error>(&mut self, r: Refused) -> E {
        self.stop = Some(r);
        E::custom("limit reached")
    }
}

/// One value to walk: a message of `kind`, or a list of them when `list`.
struct Node<'c, 'l> {
    c: &'c mut Counter<'l>,
    kind: Kind,
    list: bool,
    depth: usize,
    /// For a list of attributes: what holds them (the limit's message).
    of: Option<&'static str>,
}

/// The field of `kind` called `key`: the kind it holds, whether a list, and its holder's name.
fn child(kind: Kind, key: &str) -> Option<(Kind, bool, Option<&'static str>)> {
    use Kind::*;
    let attributes = |of| Some((KeyValue, true, Some(of)));
    match (kind, key) {
        (Request, "resourceSpans" | "resource_spans") => Some((ResourceSpans, true, None)),
        (ResourceSpans, "resource") => Some((Resource, false, None)),
        (ResourceSpans, "scopeSpans" | "scope_spans") => Some((ScopeSpans, true, None)),
        (Resource, "attributes") => attributes("resource"),
        (Resource, "entityRefs" | "entity_refs") => Some((EntityRef, true, None)),
        (EntityRef, "idKeys" | "id_keys" | "descriptionKeys" | "description_keys") => {
            Some((Strings, true, None))
        }
        (ScopeSpans, "scope") => Some((Scope, false, None)),
        (ScopeSpans, "spans") => Some((Span, true, None)),
        (Scope, "attributes") => attributes("scope"),
        (Span, "attributes") => attributes("span"),
        (Span, "events") => Some((Event, true, None)),
        (Span, "links") => Some((Link, true, None)),
        (Event, "attributes") => attributes("span event"),
        (Link, "attributes") => attributes("span link"),
        (KeyValue, "value") => Some((AnyValue, false, None)),
        (AnyValue | ArrayItem, "arrayValue" | "array_value") => Some((Array, false, None)),
        (AnyValue | ArrayItem, "kvlistValue" | "kvlist_value") => Some((KvList, false, None)),
        (Array, "values") => Some((ArrayItem, true, None)),
        (KvList, "values") => Some((KeyValue, true, None)),
        _ => None,
    }
}

/// A map key, recognised without allocating.
struct Key(Option<(Kind, bool, Option<&'static str>)>);

struct KeySeed(Kind);

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(child(self.0, v)))
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.list {
            write!(f, "an array of {:?}", self.kind)
        } else {
            write!(f, "a {:?} object", self.kind)
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.list {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Seq,
                &self,
            ));
        }
        let mut n = 0u64;
        loop {
            let more = if self.kind == Kind::Strings {
                self.c.census.entity_refs += 1;
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                let node = Node {
                    c: &mut *self.c,
                    kind: self.kind,
                    list: false,
                    depth: self.depth,
                    of: None,
                };
                seq.next_element_seed(node)?.is_some()
            };
            if !more {
                return Ok(());
            }
            n += 1;
            if let Some(of) = self.of
                && let Err(r) = self.c.census.attributes_within(n, of, self.c.limits)
            {
                return Err(self.c.refuse(r));
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.list {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            ));
        }
        let c = self.c;
        match self.kind {
            Kind::ResourceSpans | Kind::Resource => c.census.resources += 1,
            Kind::ScopeSpans | Kind::Scope => c.census.scopes += 1,
            Kind::Span => {
                c.census.spans += 1;
                if c.census.spans > c.limits.max_spans
                    && let Err(r) = c.census.within(c.limits)
                {
                    return Err(c.refuse(r));
                }
            }
            Kind::Event | Kind::Link => c.census.events_links += 1,
            Kind::KeyValue => c.census.key_values += 1,
            Kind::EntityRef => c.census.entity_refs += 1,
            Kind::ArrayItem => c.census.array_values += 1,
            _ => {}
        }
        let depth = match self.kind {
            Kind::AnyValue | Kind::ArrayItem if self.depth >= MAX_DEPTH => {
                return Err(c.refuse(Refused::Invalid(format!(
                    "an attribute value nests arrays or lists deeper than {MAX_DEPTH} levels"
                ))));
            }
            Kind::Array | Kind::KvList => self.depth + 1,
            _ => self.depth,
        };
        let level = copies(self.kind, self.depth);
        while let Some(Key(field)) = map.next_key_seed(KeySeed(self.kind))? {
            // Inside an attribute value every entry is buffered once per enclosing value.
            c.census.json_copies = c.census.json_copies.saturating_add(COPY * level);
            match field {
                Some((kind, list, of)) => map.next_value_seed(Node {
                    c: &mut *c,
                    kind,
                    list,
                    depth,
                    of,
                })?,
                None if level > 0 => map.next_value_seed(Deep { c: &mut *c, level })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if level > 0 && c.census.json_copies > c.limits.max_decoded_bytes {
            return Err(c.refuse(Refused::TooMuch(format!(
                "the export's attribute values would take more than {} bytes while decoded; \
                 send smaller or flatter values",
                c.limits.max_decoded_bytes
            ))));
        }
        Ok(())
    }
}

/// Bytes one buffered JSON value takes (serde's `Content`, with its slot in a map or list).
const COPY: u64 = 64;

/// How many times a value of `kind` at `depth` is held while decoding: `AnyValue` is decoded
/// through a buffer (`serde(flatten)`), and every enclosing attribute value buffers the whole
/// subtree again.
fn copies(kind: Kind, depth: usize) -> u64 {
    match kind {
        Kind::AnyValue | Kind::ArrayItem | Kind::Array | Kind::KvList => depth as u64 + 1,
        Kind::KeyValue => depth as u64,
        _ => 0,
    }
}

/// Any JSON value inside an attribute value: counted, not built, `level` copies each.
struct Deep<'c, 'l> {
    c: &'c mut Counter<'l>,
    level: u64,
}

impl Deep<'_, '_> {
    fn add(&mut self, bytes: usize) {
        let cost = (COPY + bytes as u64).saturating_mul(self.level);
        self.c.census.json_copies = self.c.census.json_copies.saturating_add(cost);
    }
}

impl<'de> DeserializeSeed<'de> for Deep<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Deep<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(mut self, _: bool) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(mut self, _: i64) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(mut self, _: u64) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(mut self, _: f64) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(mut self, v: &str) -> Result<(), E> {
        self.add(v.len());
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(mut self) -> Result<(), E> {
        self.add(0);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.add(0);
        let level = self.level;
        while seq
            .next_element_seed(Deep {
                c: &mut *self.c,
                level,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.add(0);
        let level = self.level;
        while map
            .next_key_seed(Deep {
                c: &mut *self.c,
                level,
            })?
            .is_some()
        {
            map.next_value_seed(Deep {
                c: &mut *self.c,
                level,
            })?;
        }
        Ok(())
    }
}

/// Counts `body`; see [`crate::census::json`].
pub(crate) fn count(body: &[u8], limits: &Limits) -> Result<Census, Refused> {
    let mut c = Counter {
        census: Census::default(),
        limits,
        stop: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let walked = Node {
        c: &mut c,
        kind: Kind::Request,
        list: false,
        depth: 0,
        of: None,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = walked {
        return Err(c.stop.take().unwrap_or_else(|| {
            Refused::Invalid(format!(
                "cannot decode OTLP/JSON ExportTraceServiceRequest at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        }));
    }
    // Every decoded string comes from the body, and none is longer than it is there.
    c.census.payload_bytes = body.len() as u64;
    c.census.within(limits)?;
    Ok(c.census)
}
