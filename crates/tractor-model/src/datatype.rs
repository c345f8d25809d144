//! The Open Inference Protocol's tensor datatypes and their mapping to tract's.

use serde::Serialize;
use tract_onnx::prelude::DatumType;

/// A V2 tensor datatype. `BYTES` is absent: tract models here take numeric tensors only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    /// `BOOL`
    Bool,
    /// `UINT8`
    Uint8,
    /// `UINT16`
    Uint16,
    /// `UINT32`
    Uint32,
    /// `UINT64`
    Uint64,
    /// `INT8`
    Int8,
    /// `INT16`
    Int16,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP16`
    Fp16,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
}

impl DataType {
    /// Every datatype, for tables and tests.
    pub const ALL: [DataType; 12] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
    ];

    /// The protocol's spelling (`"FP32"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
        }
    }

    /// Parse the protocol's spelling; `None` for unknown names and for `BYTES`.
    pub fn parse(s: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element in the binary tensor extension (little-endian, BOOL as one byte).
    pub fn size(self) -> usize {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
        }
    }

    /// tract's datum type.
    pub fn datum(self) -> DatumType {
        match self {
            DataType::Bool => DatumType::Bool,
            DataType::Uint8 => DatumType::U8,
            DataType::Uint16 => DatumType::U16,
            DataType::Uint32 => DatumType::U32,
            DataType::Uint64 => DatumType::U64,
            DataType::Int8 => DatumType::I8,
            DataType::Int16 => DatumType::I16,
            DataType::Int32 => DatumType::I32,
            DataType::Int64 => DatumType::I64,
            DataType::Fp16 => DatumType::F16,
            DataType::Fp32 => DatumType::F32,
            DataType::Fp64 => DatumType::F64,
        }
    }

    /// The V2 datatype of a tract datum type, if it has one.
    pub fn from_datum(dt: DatumType) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.datum() == dt)
    }

    /// Whether values are floating point (JSON numbers with fractions allowed).
    pub fn is_float(self) -> bool {
        matches!(self, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bytes_is_refused() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
            assert_eq!(DataType::from_datum(d.datum()), Some(d));
        }
        assert_eq!(DataType::parse("BYTES"), None);
        assert_eq!(DataType::parse("fp32"), None);
    }
}
