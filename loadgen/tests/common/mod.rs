//! Shared test helpers: a hand-written JSON Schema check (the subset report.schema.json uses) and a
//! small in-process mock of the uring-chat wire protocol, so loadgen's own logic is tested over real
//! sockets independently of the server's state.
#![allow(dead_code)]

pub mod mock;
pub mod pki;

use serde_json::Value;

/// The report schema shipped with loadgen.
pub fn report_schema() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read schema")).expect("schema JSON")
}

/// Validates `v` against `schema` (type, const, enum, required, properties, additionalProperties,
/// items, minItems, maxItems, minimum, $ref to #/$defs). Returns every violation with its path.
pub fn validate(v: &Value, schema: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    check(v, schema, schema, "$", &mut errs);
    errs
}

fn check(v: &Value, s: &Value, root: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("only #/$defs refs");
        return check(v, &root["$defs"][name], root, path, errs);
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::String(x) => vec![x.as_str()],
            Value::Array(xs) => xs.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema at {path}"),
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            other => panic!("unknown type {other}"),
        });
        if !ok {
            errs.push(format!("{path}: expected {types:?}, got {v}"));
            return;
        }
    }
    if let Some(c) = s.get("const") {
        if v != c {
            errs.push(format!("{path}: expected {c}, got {v}"));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            errs.push(format!("{path}: {v} not in {options:?}"));
        }
    }
    if let (Some(min), Some(x)) = (s.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            errs.push(format!("{path}: {x} below minimum {min}"));
        }
    }
    if let Value::Object(map) = v {
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    errs.push(format!("{path}: missing required field {r}"));
                }
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in map {
            let sub = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(val, ps, root, &sub, errs),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{sub}: not in the schema")),
                    Some(extra @ Value::Object(_)) => check(val, extra, root, &sub, errs),
                    _ => {}
                },
            }
        }
    }
    if let Value::Array(items) = v {
        if let Some(n) = s.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < n {
                errs.push(format!("{path}: fewer than {n} items"));
            }
        }
        if let Some(n) = s.get("maxItems").and_then(Value::as_u64) {
            if (items.len() as u64) > n {
                errs.push(format!("{path}: more than {n} items"));
            }
        }
        if let Some(is) = s.get("items") {
            for (i, it) in items.iter().enumerate() {
                check(it, is, root, &format!("{path}[{i}]"), errs);
            }
        }
    }
}

/// Every property name the schema declares, at any depth.
pub fn schema_property_names(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(s: &Value, out: &mut Vec<String>) {
        match s {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get("properties") {
                    out.extend(props.keys().cloned());
                }
                for v in m.values() {
                    walk(v, out);
                }
            }
            Value::Array(xs) => xs.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(schema, &mut out);
    out.sort();
    out.dedup();
    out
}

/// Options for a small, short end-to-end run (50 clients, 50 msg/s for 1 s) against `port`, with
/// `extra` flags appended (later flags win).
pub fn small_run(port: u16, extra: &[&str]) -> loadgen::Options {
    small_run_against(&["--port", &port.to_string()], extra)
}

/// The same small run against `target` (`["--port", P]` or `["--hosts", LIST]`).
pub fn small_run_against(target: &[&str], extra: &[&str]) -> loadgen::Options {
    let mut args = vec!["loadgen"];
    args.extend_from_slice(target);
    args.extend_from_slice(&[
        "--clients",
        "50",
        "--threads",
        "2",
        "--rate",
        "50",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--quiet",
    ]);
    args.extend_from_slice(extra);
    <loadgen::Options as clap::Parser>::try_parse_from(args).unwrap()
}

/// A `--pattern mixed` run delivered every measured kind whole: each broadcast and direct message
/// reached every recipient it was expected to, none twice, and (with `in_order`) none out of order.
pub fn assert_kinds_whole(r: &loadgen::Report, in_order: bool) {
    let k = r.kinds.as_ref().expect("kinds section");
    for x in [&k.broadcast, &k.direct] {
        assert_eq!(x.received, x.deliveries_expected, "{}", r.text());
        assert_eq!((x.lost, x.duplicated), (0, 0), "{}", r.text());
        if in_order {
            assert_eq!(x.out_of_order, 0, "{}", r.text());
        }
    }
}
