//! The V2 tensor codec: JSON tensors (flat or nested), the binary tensor extension, typed and raw
//! gRPC contents, all to and from tract tensors, checking every claim against what was sent.
//!
//! Rule: a claimed shape is never trusted for allocation. Element counts are computed with checked
//! arithmetic and compared with the data actually present before any buffer is built.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tractor_model::{Datatype, Signature, Tensor, TensorSpec, f16};

/// A rejected request: the message goes into `{"error": ...}` with status 400 (gRPC INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(msg: impl Into<String>) -> BadRequest {
    BadRequest(msg.into())
}

/// The JSON header of a V2 infer request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    /// Echoed in the response.
    #[serde(default)]
    pub id: Option<String>,
    /// Request parameters (`binary_data_output` is the one understood).
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Input tensors.
    pub inputs: Vec<RequestInput>,
    /// Requested outputs; all outputs when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

/// One input tensor of a JSON request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestInput {
    /// Must name a model input.
    pub name: String,
    /// Dimensions, all non-negative.
    pub shape: Vec<i64>,
    /// V2 datatype name.
    pub datatype: String,
    /// `binary_data_size` when the data follows the JSON header.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// The values, flat or nested; absent in binary mode.
    #[serde(default)]
    pub data: Option<Value>,
}

/// One requested output.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestOutput {
    /// Must name a model output.
    pub name: String,
    /// `binary_data: true` asks for this output in binary.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// Which outputs to return and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSelection {
    /// (output index in the signature, binary?) in the order to return them.
    pub outputs: Vec<(usize, bool)>,
}

impl OutputSelection {
    /// Every output, in binary or JSON.
    pub fn all(signature: &Signature, binary: bool) -> OutputSelection {
        OutputSelection {
            outputs: (0..signature.outputs.len()).map(|i| (i, binary)).collect(),
        }
    }

    /// Resolve requested output names against the signature.
    pub fn select<'a>(
        signature: &Signature,
        requested: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Result<OutputSelection, BadRequest> {
        let mut outputs = Vec::new();
        for (name, binary) in requested {
            let ix = signature
                .outputs
                .iter()
                .position(|o| o.name == name)
                .ok_or_else(|| bad(format!("unknown output '{name}'")))?;
            if outputs.iter().any(|(i, _)| *i == ix) {
                return Err(bad(format!("output '{name}' requested twice")));
            }
            outputs.push((ix, binary));
        }
        Ok(OutputSelection { outputs })
    }
}

/// A decoded request, its inputs in the model's order.
#[derive(Debug)]
pub struct Decoded {
    /// The request id, if any.
    pub id: Option<String>,
    /// One tensor per model input.
    pub inputs: Vec<Tensor>,
    /// Rows on axis 0 (1 for a model without a batch axis).
    pub rows: usize,
    /// Outputs to return.
    pub outputs: OutputSelection,
    /// Request parameters, for explain options.
    pub parameters: Map<String, Value>,
}

fn param_bool(params: &Option<Map<String, Value>>, key: &str) -> Result<Option<bool>, BadRequest> {
    match params.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("parameter {key} must be a boolean"))),
    }
}

/// Checked element count of a claimed shape (`None` on a negative dim or overflow).
pub fn element_count(shape: &[i64]) -> Result<(Vec<usize>, usize), BadRequest> {
    let mut dims = Vec::with_capacity(shape.len().min(16));
    let mut n: usize = 1;
    for d in shape {
        let d = usize::try_from(*d)
            .map_err(|_| bad(format!("shape {shape:?} has a negative dimension")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
        dims.push(d);
    }
    Ok((dims, n))
}

/// Check a tensor's claimed datatype and shape against the model input, returning the shape as usize.
pub fn check_input(
    spec: &TensorSpec,
    datatype: &str,
    shape: &[i64],
) -> Result<(Datatype, Vec<usize>, usize), BadRequest> {
    let dt = tractor_model::datatype::parse_numeric(datatype).ok_or_else(|| {
        bad(format!(
            "input '{}': unsupported datatype '{datatype}'",
            spec.name
        ))
    })?;
    if dt != spec.datatype {
        return Err(bad(format!(
            "input '{}': datatype {dt} does not match the model's {}",
            spec.name, spec.datatype
        )));
    }
    let (dims, elements) = element_count(shape)?;
    let matches = dims.len() == spec.shape.len()
        && dims
            .iter()
            .zip(&spec.shape)
            .all(|(d, want)| *want < 0 || *d as i64 == *want);
    if !matches {
        return Err(bad(format!(
            "input '{}': shape {shape:?} does not match the model's {:?}",
            spec.name, spec.shape
        )));
    }
    Ok((dt, dims, elements))
}

/// What a codec function says of `BYTES`: [`check_input`] refuses it and no model signature has it, so it only
/// comes from a caller that skipped both.
const BYTES_UNSUPPORTED: &str = "BYTES tensors are not supported";

/// Runs `$body` with `$T` the element type of `$dt`; `BYTES`, which has none, gives `Err($bytes)`.
macro_rules! dispatch {
    ($dt:expr, $T:ident => $body:expr, BYTES => $bytes:expr) => {
        match $dt {
            Datatype::Bytes => Err($bytes),
            Datatype::Bool => {
                type $T = bool;
                $body
            }
            Datatype::Uint8 => {
                type $T = u8;
                $body
            }
            Datatype::Uint16 => {
                type $T = u16;
                $body
            }
            Datatype::Uint32 => {
                type $T = u32;
                $body
            }
            Datatype::Uint64 => {
                type $T = u64;
                $body
            }
            Datatype::Int8 => {
                type $T = i8;
                $body
            }
            Datatype::Int16 => {
                type $T = i16;
                $body
            }
            Datatype::Int32 => {
                type $T = i32;
                $body
            }
            Datatype::Int64 => {
                type $T = i64;
                $body
            }
            Datatype::Fp16 => {
                type $T = f16;
                $body
            }
            Datatype::Fp32 => {
                type $T = f32;
                $body
            }
            Datatype::Fp64 => {
                type $T = f64;
                $body
            }
        }
    };
}

/// Element conversions shared by the JSON, binary and gRPC paths.
pub trait Element: Sized + Copy + tractor_model::Datum + 'static {
    /// From a JSON value, strictly: no `null`, no booleans for numbers, no fractions for integers.
    fn from_json(v: &Value) -> Option<Self>;
    /// To a JSON value.
    fn to_json(self) -> Value;
    /// From little-endian bytes of exactly the element size.
    fn from_le(b: &[u8]) -> Self;
    /// Append little-endian bytes.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! int_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            fn from_json(v: &Value) -> Option<Self> {
                match v {
                    Value::Number(n) => n.as_i64().and_then(|x| <$t>::try_from(x).ok()).or_else(|| n.as_u64().and_then(|x| <$t>::try_from(x).ok())),
                    _ => None,
                }
            }
            fn to_json(self) -> Value { Value::from(self) }
            fn from_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
            fn put_le(self, out: &mut Vec<u8>) { out.extend_from_slice(&self.to_le_bytes()) }
        }
    )*};
}
int_element!(u8, u16, u32, u64, i8, i16, i32, i64);

impl Element for bool {
    fn from_json(v: &Value) -> Option<Self> {
        v.as_bool()
    }
    fn to_json(self) -> Value {
        Value::Bool(self)
    }
    fn from_le(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self as u8)
    }
}

impl Element for f32 {
    fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_f64().map(|x| x as f32),
            _ => None,
        }
    }
    fn to_json(self) -> Value {
        serde_json::Number::from_f64(self as f64)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}

impl Element for f64 {
    fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }
    fn to_json(self) -> Value {
        serde_json::Number::from_f64(self)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
    fn from_le(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        f64::from_le_bytes(a)
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}

impl Element for f16 {
    fn from_json(v: &Value) -> Option<Self> {
        f32::from_json(v).map(f16::from_f32)
    }
    fn to_json(self) -> Value {
        self.to_f32().to_json()
    }
    fn from_le(b: &[u8]) -> Self {
        f16::from_le_bytes([b[0], b[1]])
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}

fn flatten<T: Element>(
    v: &Value,
    out: &mut Vec<T>,
    limit: usize,
    name: &str,
    dt: Datatype,
) -> Result<(), BadRequest> {
    match v {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, limit, name, dt)?;
            }
            Ok(())
        }
        other => {
            if out.len() >= limit {
                return Err(bad(format!(
                    "input '{name}': more data than the shape holds ({limit} elements)"
                )));
            }
            let x = T::from_json(other)
                .ok_or_else(|| bad(format!("input '{name}': {other} is not a {dt} value")))?;
            out.push(x);
            Ok(())
        }
    }
}

fn from_json_typed<T: Element>(
    data: &Value,
    dims: &[usize],
    n: usize,
    name: &str,
    dt: Datatype,
) -> Result<Tensor, BadRequest> {
    // Capacity from the data actually sent (bounded by the claim), never from the claim alone.
    let sent = match data {
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let mut out: Vec<T> = Vec::with_capacity(sent.min(n));
    flatten(data, &mut out, n, name, dt)?;
    if out.len() != n {
        return Err(bad(format!(
            "input '{name}': shape {dims:?} needs {n} values, got {}",
            out.len()
        )));
    }
    Tensor::from_shape(dims, &out).map_err(|e| bad(format!("input '{name}': {e}")))
}

/// Decode JSON data (flat or nested) into a tensor of `dims`.
pub fn tensor_from_json(
    dt: Datatype,
    dims: &[usize],
    n: usize,
    data: &Value,
    name: &str,
) -> Result<Tensor, BadRequest> {
    dispatch!(dt, T => from_json_typed::<T>(data, dims, n, name, dt), BYTES => bad(BYTES_UNSUPPORTED))
}

fn from_le_typed<T: Element>(
    bytes: &[u8],
    dims: &[usize],
    size: usize,
) -> Result<Tensor, BadRequest> {
    let v: Vec<T> = bytes.chunks_exact(size).map(T::from_le).collect();
    Tensor::from_shape(dims, &v).map_err(|e| bad(e.to_string()))
}

/// Decode little-endian raw bytes (binary extension, gRPC raw contents); the length must match exactly.
pub fn tensor_from_le(
    dt: Datatype,
    dims: &[usize],
    n: usize,
    bytes: &[u8],
    name: &str,
) -> Result<Tensor, BadRequest> {
    let size = dt
        .size()
        .ok_or_else(|| bad(format!("input '{name}': {BYTES_UNSUPPORTED}")))?;
    let want = n
        .checked_mul(size)
        .ok_or_else(|| bad(format!("input '{name}': shape too large")))?;
    if bytes.len() != want {
        return Err(bad(format!(
            "input '{name}': shape {dims:?} of {dt} needs {want} bytes, got {}",
            bytes.len()
        )));
    }
    dispatch!(dt, T => from_le_typed::<T>(bytes, dims, size), BYTES => bad(BYTES_UNSUPPORTED))
}

/// Build a tensor from already-typed values (gRPC typed contents), checking the count.
pub fn tensor_from_vec<T: Element>(
    dims: &[usize],
    n: usize,
    values: Vec<T>,
    name: &str,
) -> Result<Tensor, BadRequest> {
    if values.len() != n {
        return Err(bad(format!(
            "input '{name}': shape {dims:?} needs {n} values, got {}",
            values.len()
        )));
    }
    Tensor::from_shape(dims, &values).map_err(|e| bad(e.to_string()))
}

fn slice_of<T: Element>(t: &Tensor) -> Result<&[T], String> {
    t.try_as_plain_ram()
        .and_then(|v| v.as_slice::<T>())
        .map_err(|e| format!("{e:#}"))
}

/// The tensor's values as JSON numbers (or booleans), flat.
pub fn tensor_to_json(dt: Datatype, t: &Tensor) -> Result<Vec<Value>, String> {
    dispatch!(
        dt,
        T => Ok(slice_of::<T>(t)?.iter().map(|x| x.to_json()).collect()),
        BYTES => BYTES_UNSUPPORTED.to_owned()
    )
}

/// The tensor's values as little-endian bytes.
pub fn tensor_to_le(dt: Datatype, t: &Tensor) -> Result<Vec<u8>, String> {
    dispatch!(dt, T => {
        let s = slice_of::<T>(t)?;
        let mut out = Vec::with_capacity(std::mem::size_of_val(s));
        for x in s { x.put_le(&mut out); }
        Ok(out)
    }, BYTES => BYTES_UNSUPPORTED.to_owned())
}

/// The tensor's values converted to f64 (for feedback and explain).
pub fn tensor_to_f64(dt: Datatype, t: &Tensor) -> Result<Vec<f64>, String> {
    Ok(tensor_to_json(dt, t)?
        .iter()
        .map(|v| {
            v.as_f64()
                .or_else(|| v.as_bool().map(|b| b as u8 as f64))
                .unwrap_or(f64::NAN)
        })
        .collect())
}

/// Decode a REST infer request: `header` is the JSON part, `binary` what followed it (binary extension).
pub fn decode_rest(
    signature: &Signature,
    header: &[u8],
    binary: &[u8],
) -> Result<Decoded, BadRequest> {
    let req: InferRequest =
        serde_json::from_slice(header).map_err(|e| bad(format!("malformed request JSON: {e}")))?;
    let mut slots: Vec<Option<Tensor>> = signature.inputs.iter().map(|_| None).collect();
    let mut cursor = 0usize;
    for input in &req.inputs {
        let ix = signature
            .inputs
            .iter()
            .position(|s| s.name == input.name)
            .ok_or_else(|| bad(format!("unknown input '{}'", input.name)))?;
        if slots[ix].is_some() {
            return Err(bad(format!("input '{}' given twice", input.name)));
        }
        let spec = &signature.inputs[ix];
        let (dt, dims, elements) = check_input(spec, &input.datatype, &input.shape)?;
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "input '{}': binary_data_size must be a non-negative integer",
                            input.name
                        ))
                    })?,
            ),
        };
        let tensor = match (binary_size, &input.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input '{}': both data and binary_data_size given",
                    input.name
                )));
            }
            (Some(size), None) => {
                let end = cursor
                    .checked_add(size)
                    .filter(|e| *e <= binary.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "input '{}': binary_data_size {size} runs past the body",
                            input.name
                        ))
                    })?;
                let tensor =
                    tensor_from_le(dt, &dims, elements, &binary[cursor..end], &input.name)?;
                cursor = end;
                tensor
            }
            (None, Some(data)) => tensor_from_json(dt, &dims, elements, data, &input.name)?,
            (None, None) => return Err(bad(format!("input '{}' has no data", input.name))),
        };
        slots[ix] = Some(tensor);
    }
    if cursor != binary.len() {
        return Err(bad(format!(
            "{} bytes of binary data are not claimed by any input",
            binary.len() - cursor
        )));
    }
    let inputs = slots
        .into_iter()
        .zip(&signature.inputs)
        .map(|(t, s)| t.ok_or_else(|| bad(format!("missing input '{}'", s.name))))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = batch_rows(signature, &inputs)?;
    let default_binary = param_bool(&req.parameters, "binary_data_output")?.unwrap_or(false);
    let outputs = match &req.outputs {
        None => OutputSelection::all(signature, default_binary),
        Some(list) => {
            let mut requested = Vec::with_capacity(list.len());
            for output in list {
                requested.push((
                    output.name.as_str(),
                    param_bool(&output.parameters, "binary_data")?.unwrap_or(default_binary),
                ));
            }
            OutputSelection::select(signature, requested)?
        }
    };
    Ok(Decoded {
        id: req.id,
        inputs,
        rows,
        outputs,
        parameters: req.parameters.unwrap_or_default(),
    })
}

/// Rows on axis 0, which every input must agree on.
pub fn batch_rows(signature: &Signature, inputs: &[Tensor]) -> Result<usize, BadRequest> {
    let batched = signature
        .inputs
        .iter()
        .all(|s| s.shape.first() == Some(&-1));
    if !batched {
        return Ok(1);
    }
    let rows = inputs
        .first()
        .and_then(|t| t.shape().first().copied())
        .unwrap_or(1);
    if inputs.iter().any(|t| t.shape().first() != Some(&rows)) {
        return Err(bad("inputs disagree on the batch size (axis 0)"));
    }
    Ok(rows)
}

/// One output of a JSON response.
#[derive(Debug, Serialize)]
pub struct ResponseOutput {
    /// Output name.
    pub name: String,
    /// V2 datatype.
    pub datatype: &'static str,
    /// Shape.
    pub shape: Vec<usize>,
    /// `binary_data_size` for binary outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Values, flat; absent for binary outputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<Value>>,
}

/// A V2 infer response header.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    /// The model's name.
    pub model_name: String,
    /// The version served.
    pub model_version: String,
    /// The request id, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters (the prediction receipt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Map<String, Value>>,
    /// Outputs.
    pub outputs: Vec<ResponseOutput>,
}

/// Encode outputs: the JSON header and the binary part (empty when every output is JSON). A `receipt` becomes
/// the response's `tractor_receipt` parameter.
pub fn encode_rest(
    model: &str,
    version: &str,
    id: Option<String>,
    receipt: Option<String>,
    signature: &Signature,
    selection: &OutputSelection,
    tensors: &[Tensor],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut outputs = Vec::with_capacity(selection.outputs.len());
    let mut binary = Vec::new();
    for (ix, as_binary) in &selection.outputs {
        let spec = &signature.outputs[*ix];
        let tensor = tensors
            .get(*ix)
            .ok_or("model returned fewer outputs than its signature")?;
        let (parameters, data) = if *as_binary {
            let bytes = tensor_to_le(spec.datatype, tensor)?;
            let mut params = Map::new();
            params.insert("binary_data_size".into(), Value::from(bytes.len()));
            binary.extend_from_slice(&bytes);
            (Some(params), None)
        } else {
            (None, Some(tensor_to_json(spec.datatype, tensor)?))
        };
        outputs.push(ResponseOutput {
            name: spec.name.clone(),
            datatype: spec.datatype.as_str(),
            shape: tensor.shape().to_vec(),
            parameters,
            data,
        });
    }
    let header = serde_json::to_vec(&InferResponse {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        id,
        parameters: receipt.map(|receipt| {
            let mut params = Map::new();
            params.insert(crate::receipt::PARAMETER.into(), Value::from(receipt));
            params
        }),
        outputs,
    })
    .map_err(|e| e.to_string())?;
    Ok((header, binary))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 2],
            }],
            outputs: vec![
                TensorSpec {
                    name: "label".into(),
                    datatype: Datatype::Int64,
                    shape: vec![-1],
                },
                TensorSpec {
                    name: "probabilities".into(),
                    datatype: Datatype::Fp32,
                    shape: vec![-1, 2],
                },
            ],
            notes: vec![],
        }
    }

    fn decode(v: Value) -> Result<Decoded, BadRequest> {
        decode_rest(&sig(), &serde_json::to_vec(&v).unwrap(), &[])
    }

    #[test]
    fn flat_and_nested_data_decode_the_same() {
        let flat = decode(json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2.5, 3, 4]}]})).unwrap();
        let nested = decode(json!({"id": "a", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]}]})).unwrap();
        assert_eq!(flat.inputs[0], nested.inputs[0]);
        assert_eq!(nested.rows, 2);
        assert_eq!(nested.id.as_deref(), Some("a"));
        assert_eq!(
            flat.outputs,
            OutputSelection {
                outputs: vec![(0, false), (1, false)]
            }
        );
    }

    #[test]
    fn rejections_table() {
        let cases = [
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, null]}]}),
                "not a FP32",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, true]}]}),
                "not a FP32",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1]}]}),
                "needs 2 values",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2, 3]}]}),
                "more data",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}),
                "does not match",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
                "does not match",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": [1, 2]}]}),
                "negative",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [4611686018427387904i64, 8], "datatype": "FP32", "data": [1, 2]}]}),
                "too large",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1000000000, 2], "datatype": "FP32", "data": [1, 2]}]}),
                "needs 2000000000 values",
            ),
            (
                json!({"inputs": [{"name": "y", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}),
                "unknown input",
            ),
            (json!({"inputs": []}), "missing input"),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}),
                "unsupported datatype",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}], "outputs": [{"name": "nope"}]}),
                "unknown output",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}]}),
                "no data",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}),
                "past the body",
            ),
            (json!({"inputz": []}), "malformed"),
        ];
        for (body, want) in cases {
            let err = decode(body.clone()).expect_err(&body.to_string());
            assert!(
                err.0.contains(want),
                "{body}: {err} does not contain {want}"
            );
        }
    }

    #[test]
    fn binary_inputs_and_outputs() {
        let header = serde_json::to_vec(&json!({"id": "b", "parameters": {"binary_data_output": true}, "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}], "outputs": [{"name": "probabilities"}]})).unwrap();
        let mut raw = Vec::new();
        raw.extend_from_slice(&1.5f32.to_le_bytes());
        raw.extend_from_slice(&(-2f32).to_le_bytes());
        let d = decode_rest(&sig(), &header, &raw).unwrap();
        assert_eq!(
            d.inputs[0],
            Tensor::from_shape(&[1, 2], &[1.5f32, -2.0]).unwrap()
        );
        assert_eq!(
            d.outputs,
            OutputSelection {
                outputs: vec![(1, true)]
            }
        );
        let outs = [
            Tensor::from_shape(&[1], &[1i64]).unwrap(),
            Tensor::from_shape(&[1, 2], &[0.25f32, 0.75]).unwrap(),
        ];
        let (h, b) = encode_rest("m", "1", d.id, None, &sig(), &d.outputs, &outs).unwrap();
        let h: Value = serde_json::from_slice(&h).unwrap();
        assert_eq!(h["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(h["id"], "b");
        assert_eq!(b.len(), 8);
        // A wrong binary length is refused before anything is built from the shape.
        let err = decode_rest(&sig(), &header, &raw[..4]).unwrap_err();
        assert!(err.0.contains("past the body"), "{err}");
    }

    #[test]
    fn integers_are_strict() {
        assert_eq!(i64::from_json(&json!(3)), Some(3));
        assert_eq!(i64::from_json(&json!(3.5)), None);
        assert_eq!(u8::from_json(&json!(256)), None);
        assert_eq!(u8::from_json(&json!(-1)), None);
        assert_eq!(bool::from_json(&json!(1)), None);
        assert_eq!(f32::from_json(&json!(null)), None);
    }
}
