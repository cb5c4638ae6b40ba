//! `f64` fields in JSON that keep NaN and infinities: serde_json writes those as `null`, which
//! a plain `f64` cannot read back (and an `Option<f64>` reads as "absent"). With
//! `#[serde(with = "crate::jsonfloat")]` a non-finite value is written as the string `"NaN"`,
//! `"inf"` or `"-inf"`, and read back as that value, so every line stays valid JSON and the
//! reader agrees with the writer.

use serde::{Deserialize, Deserializer, Serializer};

fn name(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// A number, or one of the names [`serialize`] writes.
#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Name(String),
}

impl Repr {
    fn value<E: serde::de::Error>(self) -> Result<f64, E> {
        match self {
            Repr::Number(v) => Ok(v),
            Repr::Name(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(E::custom(format!("'{s}' is not a number, \"NaN\", \"inf\" or \"-inf\""))),
            },
        }
    }
}

/// Writes a finite value as a number, any other as its name.
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() { s.serialize_f64(*v) } else { s.serialize_str(name(*v)) }
}

/// Reads what [`serialize`] writes.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Repr::deserialize(d)?.value()
}

/// The same for `Option<f64>` (`null` is `None`); use with `#[serde(default, with = ...)]`.
pub mod option {
    use super::*;

    /// Writes `None` as `null`, a value as [`super::serialize`] does.
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    /// Reads what [`serialize`] writes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Option::<Repr>::deserialize(d)?.map(Repr::value).transpose()
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::MetricRow;

    fn row(loss: f64, grad_norm: Option<f64>) -> MetricRow {
        MetricRow {
            step: 3,
            split: "train".into(),
            loss,
            accuracy: 0.5,
            lr: 1e9,
            grad_norm,
            tokens_per_s: None,
            elapsed_s: 1.25,
            rl: None,
            eval_metrics: None,
            comm_fraction: None,
        }
    }

    #[test]
    fn non_finite_values_are_written_as_names_and_read_back() {
        for (loss, norm, text) in [
            (f64::NAN, Some(f64::INFINITY), r#""loss":"NaN""#),
            (f64::NEG_INFINITY, None, r#""loss":"-inf""#),
            (2.5, Some(f64::NAN), r#""grad_norm":"NaN""#),
        ] {
            let line = serde_json::to_string(&row(loss, norm)).unwrap();
            assert!(line.contains(text), "{line}");
            assert!(!line.contains("null,\"acc"), "a non-finite loss must not be written as null: {line}");
            let back: MetricRow = serde_json::from_str(&line).unwrap();
            assert!(back.loss.to_bits() == loss.to_bits() || (back.loss.is_nan() && loss.is_nan()), "{line}");
            assert_eq!(back.grad_norm.map(f64::is_nan), norm.map(f64::is_nan), "{line}");
            assert_eq!(back.grad_norm.map(f64::is_infinite), norm.map(f64::is_infinite), "{line}");
        }
        let finite = serde_json::to_string(&row(0.75, Some(1.0))).unwrap();
        assert!(finite.contains(r#""loss":0.75"#) && finite.contains(r#""grad_norm":1.0"#), "{finite}");
        let bad = serde_json::to_string(&row(1.0, None)).unwrap().replace("1.0", "\"lots\"");
        let err = serde_json::from_str::<MetricRow>(&bad).unwrap_err().to_string();
        assert!(err.contains("'lots' is not a number"), "{err}");
    }
}
