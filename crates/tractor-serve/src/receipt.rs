//! Prediction receipts: what an infer response carries so that any replica can score its feedback later,
//! with no memory of the request. Behind a Service, feedback rarely reaches the replica that predicted.
//!
//! Form (a V2 `parameters` value must be a string, number or boolean):
//! `v1:<model>:<revision or ->:<unix seconds>:<class>,<class>,...`, one predicted class per row; for a regressor
//! `...:r=<value>,<value>,...`, one predicted value per row (shortest round-trip decimal). A receipt is
//! as trusted as the labels sent with it: whoever can post labels can already make the scores say anything,
//! and the feedback route sits behind the same bearer token as inference.

/// The infer response parameter that holds the receipt (REST `parameters`, gRPC `parameters`).
pub const PARAMETER: &str = "tractor_receipt";

const VERSION: &str = "v1";

/// A parsed receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The model that predicted.
    pub model: String,
    /// Its revision, when the server was told one.
    pub revision: Option<String>,
    /// When, in Unix seconds.
    pub time: u64,
    /// What was predicted for each row.
    pub predicted: Predicted,
}

/// A row's prediction: a classifier's class or a regressor's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicted {
    /// One class per row.
    Classes(Vec<i64>),
    /// One value per row.
    Values(Vec<f64>),
}

impl Predicted {
    /// Rows predicted.
    pub fn len(&self) -> usize {
        match self {
            Predicted::Classes(c) => c.len(),
            Predicted::Values(v) => v.len(),
        }
    }

    /// Whether no row was predicted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Marks a regressor's values in the last part.
const VALUES: &str = "r=";

impl Receipt {
    /// The receipt's text form.
    pub fn encode(&self) -> String {
        let rows = match &self.predicted {
            Predicted::Classes(c) => c.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
            Predicted::Values(v) => format!(
                "{VALUES}{}",
                v.iter().map(f64::to_string).collect::<Vec<_>>().join(",")
            ),
        };
        format!(
            "{VERSION}:{}:{}:{}:{rows}",
            self.model,
            self.revision.as_deref().unwrap_or("-"),
            self.time,
        )
    }

    /// Parses a receipt; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<Receipt, String> {
        if text.matches(':').count() < 4 {
            return Err("a receipt has five `:`-separated parts".to_owned());
        }
        // From the right: the model name, in the middle, is the only part that could hold a colon.
        let mut right = text.rsplitn(4, ':');
        let (Some(classes), Some(time), Some(revision), Some(head)) =
            (right.next(), right.next(), right.next(), right.next())
        else {
            return Err("a receipt has five `:`-separated parts".to_owned());
        };
        let model = head
            .strip_prefix(VERSION)
            .and_then(|m| m.strip_prefix(':'))
            .filter(|m| !m.is_empty())
            .ok_or_else(|| format!("a receipt starts with `{VERSION}:<model>:`"))?;
        let time = time
            .parse()
            .map_err(|_| format!("receipt time `{time}` is not Unix seconds"))?;
        let predicted = match classes.strip_prefix(VALUES) {
            Some(values) => Predicted::Values(
                values
                    .split(',')
                    .map(|value| {
                        value
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| {
                                format!("receipt value `{value}` is not a finite number")
                            })
                    })
                    .collect::<Result<Vec<f64>, String>>()?,
            ),
            None => Predicted::Classes(
                classes
                    .split(',')
                    .map(|class| {
                        class
                            .parse()
                            .map_err(|_| format!("receipt class `{class}` is not an integer"))
                    })
                    .collect::<Result<Vec<i64>, String>>()?,
            ),
        };
        Ok(Receipt {
            model: model.to_owned(),
            revision: (revision != "-").then(|| revision.to_owned()),
            time,
            predicted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip() {
        let cases = [
            Receipt {
                model: "digits".into(),
                revision: Some("3f9a1c0b7e".into()),
                time: 1_765_000_000,
                predicted: Predicted::Classes(vec![3]),
            },
            Receipt {
                model: "a:b".into(),
                revision: None,
                time: 0,
                predicted: Predicted::Classes(vec![0, -1, 9]),
            },
            Receipt {
                model: "diabetes".into(),
                revision: Some("0a1b2c3d4e".into()),
                time: 7,
                predicted: Predicted::Values(vec![255.26055908203125, -0.1, 1e-30]),
            },
        ];
        for receipt in cases {
            assert_eq!(
                Receipt::parse(&receipt.encode()),
                Ok(receipt.clone()),
                "{}",
                receipt.encode()
            );
        }
        assert_eq!(
            Receipt {
                model: "digits".into(),
                revision: Some("3f9a1c0b7e".into()),
                time: 12,
                predicted: Predicted::Classes(vec![3, 1]),
            }
            .encode(),
            "v1:digits:3f9a1c0b7e:12:3,1"
        );
        assert_eq!(
            Receipt {
                model: "diabetes".into(),
                revision: None,
                time: 12,
                predicted: Predicted::Values(vec![255.5, 3.0]),
            }
            .encode(),
            "v1:diabetes:-:12:r=255.5,3"
        );
    }

    #[test]
    fn malformed_receipts_say_why() {
        let cases = [
            ("", "a receipt has five `:`-separated parts"),
            ("v1:digits:r:12", "a receipt has five `:`-separated parts"),
            ("v2:digits:r:12:3", "a receipt starts with `v1:<model>:`"),
            ("v1::r:12:3", "a receipt starts with `v1:<model>:`"),
            (
                "v1:digits:r:soon:3",
                "receipt time `soon` is not Unix seconds",
            ),
            ("v1:digits:r:12:3,x", "receipt class `x` is not an integer"),
            ("v1:digits:r:12:", "receipt class `` is not an integer"),
            (
                "v1:digits:r:12:r=1.5,x",
                "receipt value `x` is not a finite number",
            ),
            (
                "v1:digits:r:12:r=NaN",
                "receipt value `NaN` is not a finite number",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Receipt::parse(text), Err(want.to_owned()), "{text}");
        }
    }
}
