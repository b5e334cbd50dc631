//! The outcome of a run: fields in the order they were set, for the one JSON
//! line on stdout (`{"bench":"<name>", ...}`), and the human summary on stderr.
//!
//! Benches set fields as soon as they are measured, so that a run that fails or
//! times out half-way still reports what it had.

use std::cell::RefCell;
use std::process::ExitCode;

use serde_json::Value;

pub struct Report {
    bench: String,
    fields: RefCell<Vec<(String, Value)>>,
}

impl Report {
    pub fn new(bench: &str) -> Report {
        Report {
            bench: bench.to_string(),
            fields: RefCell::new(vec![("bench".into(), Value::from(bench))]),
        }
    }

    /// Ends a run: adds the generator's own RSS and the error if there was one,
    /// prints the summary (stderr) and the JSON line (stdout), and returns the
    /// exit code (1 on an error).
    pub fn finish(&self, outcome: Result<(), String>) -> ExitCode {
        if let Some(rss) = pushhub::metrics::rss_bytes() {
            self.set("generator_rss_bytes", rss);
        }
        let code = match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                self.set("error", e);
                ExitCode::from(1)
            }
        };
        eprintln!("pushhub-bench {}:\n{}", self.bench, self.summary());
        println!("{}", self.json_line());
        code
    }

    /// Sets `key`, keeping its first position if it was set before.
    pub fn set(&self, key: &str, value: impl Into<Value>) {
        let value = value.into();
        let mut fields = self.fields.borrow_mut();
        match fields.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => fields.push((key.to_string(), value)),
        }
    }

    /// Sets `field` of the object `name` inside the object `key` (creating
    /// both), for figures grouped by process: `"procs":{"redis":{...}}`.
    pub fn set_in(&self, key: &str, name: &str, field: &str, value: impl Into<Value>) {
        let mut fields = self.fields.borrow_mut();
        let at = match fields.iter().position(|(k, _)| k == key) {
            Some(at) => at,
            None => {
                fields.push((key.to_string(), Value::Object(Default::default())));
                fields.len() - 1
            }
        };
        let outer = &mut fields[at].1;
        if !outer.is_object() {
            *outer = Value::Object(Default::default());
        }
        let inner = outer
            .as_object_mut()
            .expect("made an object above")
            .entry(name)
            .or_insert_with(|| Value::Object(Default::default()));
        if !inner.is_object() {
            *inner = Value::Object(Default::default());
        }
        inner
            .as_object_mut()
            .expect("made an object above")
            .insert(field.to_string(), value.into());
    }

    /// Sets a measured float, rounded to `digits` decimals (null if not finite).
    pub fn num(&self, key: &str, x: f64, digits: i32) {
        self.set(key, rounded(x, digits));
    }

    /// The JSON object, fields in order (serde_json's own map would sort them).
    pub fn json_line(&self) -> String {
        let fields = self.fields.borrow();
        let mut line = String::from("{");
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&Value::from(key.as_str()).to_string());
            line.push(':');
            line.push_str(&value.to_string());
        }
        line.push('}');
        line
    }

    /// One `key: value` line per field, for people.
    pub fn summary(&self) -> String {
        let fields = self.fields.borrow();
        let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (key, value) in fields.iter() {
            let shown = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            text.push_str(&format!("  {key:<width$}  {shown}\n"));
        }
        text
    }
}

/// `x` rounded to `digits` decimals, as a JSON number (null if not finite).
pub fn rounded(x: f64, digits: i32) -> Value {
    if digits <= 0 && x.is_finite() && x.abs() < 9e15 {
        return Value::from(x.round() as i64);
    }
    let scale = 10f64.powi(digits);
    let r = (x * scale).round() / scale;
    serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
}

/// A progress line on stderr.
pub fn say(message: &str) {
    eprintln!("pushhub-bench: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order() {
        let report = Report::new("push");
        report.set("n", 3);
        report.num("p50_us", 12.3456, 1);
        report.set("n", 4);
        report.num("bad", f64::NAN, 1);
        report.num("rate", 4999.6, 0);
        assert_eq!(
            report.json_line(),
            r#"{"bench":"push","n":4,"p50_us":12.3,"bad":null,"rate":5000}"#
        );
    }

    #[test]
    fn groups_figures_by_process() {
        let report = Report::new("push");
        report.set_in("procs", "redis", "rss_bytes", 7);
        report.set("n", 1);
        report.set_in("procs", "b", "cpu_us_per_push", rounded(1.234, 2));
        report.set_in("procs", "redis", "cpu_us_per_push", 2);
        assert_eq!(
            report.json_line(),
            r#"{"bench":"push","procs":{"b":{"cpu_us_per_push":1.23},"redis":{"cpu_us_per_push":2,"rss_bytes":7}},"n":1}"#
        );
    }
}
