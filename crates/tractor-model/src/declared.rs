//! Declared inputs (`spec.model.inputs`) against what the model itself says of each input: a pure check that
//! names the first disagreement, so a wrong declaration fails the Job instead of serving a different model.

use tractor_api::InputOverride;

use crate::datatype::{Datatype, DatatypeExt};

/// What a model says of one input before any declaration applies; `None` where it says nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInput {
    /// The input's name as clients send it.
    pub name: String,
    /// Element type, when the model fixes one.
    pub datatype: Option<Datatype>,
    /// Dimensions when the rank is known: `Some(n)` for a fixed size, `None` for a free (symbolic) one.
    pub dims: Option<Vec<Option<i64>>>,
}

/// The declared datatype in tract's terms; `None` for one no tract model takes (`BYTES`).
pub fn datatype(declared: &InputOverride) -> Option<Datatype> {
    Some(declared.datatype).filter(|d| d.is_numeric())
}

/// `Err` names the first declaration the model contradicts: an unknown input, another datatype, another rank,
/// or another size for a dimension the model fixes. A free dimension may be fixed by a declaration; a fixed
/// one may be freed only on the first axis when the model fixes it at 1, as exporters that trace at batch 1 do.
pub fn check(declared: &[InputOverride], model: &[ModelInput]) -> Result<(), String> {
    for declaration in declared {
        let Some(input) = model.iter().find(|input| input.name == declaration.name) else {
            let names: Vec<String> = model
                .iter()
                .map(|input| format!("`{}`", input.name))
                .collect();
            return Err(format!(
                "model.inputs names `{}`, but the model's inputs are {}",
                declaration.name,
                names.join(", ")
            ));
        };
        let Some(want) = datatype(declaration) else {
            return Err(format!(
                "input `{}`: declared datatype {:?} is not a numeric tensor type",
                declaration.name, declaration.datatype
            ));
        };
        if let Some(have) = input.datatype
            && have != want
        {
            return Err(format!(
                "input `{}`: declared datatype {want}, the model takes {have}",
                declaration.name
            ));
        }
        let Some(dims) = &input.dims else { continue };
        if dims.len() != declaration.shape.len() {
            return Err(format!(
                "input `{}`: declared shape {:?} has rank {}, the model's has rank {} ({})",
                declaration.name,
                declaration.shape,
                declaration.shape.len(),
                dims.len(),
                render(dims)
            ));
        }
        for (axis, (&want, have)) in declaration.shape.iter().zip(dims).enumerate() {
            let Some(have) = *have else { continue };
            let freed_batch = axis == 0 && want == -1 && have == 1;
            if want != have && !freed_batch {
                let want = if want == -1 {
                    "free (-1)".to_owned()
                } else {
                    want.to_string()
                };
                return Err(format!(
                    "input `{}` dimension {axis}: declared {want}, the model fixes it at {have} (shape {})",
                    declaration.name,
                    render(dims)
                ));
            }
        }
    }
    Ok(())
}

fn render(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |n| n.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tractor_api::Datatype;

    fn input(name: &str, dt: Option<Datatype>, dims: Option<&[Option<i64>]>) -> ModelInput {
        ModelInput {
            name: name.to_owned(),
            datatype: dt,
            dims: dims.map(<[Option<i64>]>::to_vec),
        }
    }

    fn declare(name: &str, dt: Datatype, shape: &[i64]) -> InputOverride {
        InputOverride {
            name: name.to_owned(),
            datatype: dt,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn declarations_against_the_model() {
        let free_batch = [None, Some(64)];
        let cases: Vec<(&str, InputOverride, ModelInput, Option<&str>)> = vec![
            (
                "agrees",
                declare("x", Datatype::Fp32, &[-1, 64]),
                input("x", Some(Datatype::Fp32), Some(&free_batch)),
                None,
            ),
            (
                "fixes a free dimension",
                declare("x", Datatype::Fp32, &[-1, 64]),
                input("x", Some(Datatype::Fp32), Some(&[None, None])),
                None,
            ),
            (
                "model says nothing",
                declare("x", Datatype::Int64, &[-1, 3, 4]),
                input("x", None, None),
                None,
            ),
            (
                "frees a batch traced at 1",
                declare("x", Datatype::Fp32, &[-1, 64]),
                input("x", Some(Datatype::Fp32), Some(&[Some(1), Some(64)])),
                None,
            ),
            (
                "unknown name",
                declare("y", Datatype::Fp32, &[-1, 64]),
                input("x", Some(Datatype::Fp32), Some(&free_batch)),
                Some("model.inputs names `y`, but the model's inputs are `x`"),
            ),
            (
                "other datatype",
                declare("x", Datatype::Fp16, &[-1, 64]),
                input("x", Some(Datatype::Fp32), Some(&free_batch)),
                Some("input `x`: declared datatype FP16, the model takes FP32"),
            ),
            (
                "other rank",
                declare("x", Datatype::Fp32, &[-1, 8, 8]),
                input("x", Some(Datatype::Fp32), Some(&free_batch)),
                Some(
                    "input `x`: declared shape [-1, 8, 8] has rank 3, the model's has rank 2 ([?, 64])",
                ),
            ),
            (
                "other size",
                declare("x", Datatype::Fp32, &[-1, 32]),
                input("x", Some(Datatype::Fp32), Some(&free_batch)),
                Some(
                    "input `x` dimension 1: declared 32, the model fixes it at 64 (shape [?, 64])",
                ),
            ),
            (
                "frees a fixed feature axis",
                declare("x", Datatype::Fp32, &[-1, -1]),
                input("x", Some(Datatype::Fp32), Some(&free_batch)),
                Some(
                    "input `x` dimension 1: declared free (-1), the model fixes it at 64 (shape [?, 64])",
                ),
            ),
            (
                "bytes",
                declare("x", Datatype::Bytes, &[-1]),
                input("x", None, None),
                Some("input `x`: declared datatype Bytes is not a numeric tensor type"),
            ),
        ];
        for (what, declared, model, want) in cases {
            let got = check(&[declared], &[model]);
            assert_eq!(got.err().as_deref(), want, "{what}");
        }
    }
}
