//! The Open Inference Protocol's tensor datatypes ([`Datatype`], defined in `tractor-api`) mapped to tract's.
//!
//! tract models here take numeric tensors only: a signature never has `BYTES`, and requests that send it are
//! refused ([`parse_numeric`]).

use tract_onnx::prelude::DatumType;
pub use tractor_api::Datatype;

/// What tract needs to know of a V2 datatype.
pub trait DatatypeExt {
    /// tract's datum type (`BYTES` is tract's string type).
    fn datum(self) -> DatumType;
    /// Whether models here can take or give it: every datatype but `BYTES`.
    fn is_numeric(&self) -> bool;
}

impl DatatypeExt for Datatype {
    fn datum(self) -> DatumType {
        match self {
            Datatype::Bool => DatumType::Bool,
            Datatype::Uint8 => DatumType::U8,
            Datatype::Uint16 => DatumType::U16,
            Datatype::Uint32 => DatumType::U32,
            Datatype::Uint64 => DatumType::U64,
            Datatype::Int8 => DatumType::I8,
            Datatype::Int16 => DatumType::I16,
            Datatype::Int32 => DatumType::I32,
            Datatype::Int64 => DatumType::I64,
            Datatype::Fp16 => DatumType::F16,
            Datatype::Fp32 => DatumType::F32,
            Datatype::Fp64 => DatumType::F64,
            Datatype::Bytes => DatumType::String,
        }
    }

    fn is_numeric(&self) -> bool {
        *self != Datatype::Bytes
    }
}

/// The V2 datatype of a tract datum type, if it is a numeric one models here take (not tract's strings).
pub fn from_datum(dt: DatumType) -> Option<Datatype> {
    Datatype::ALL
        .into_iter()
        .find(|d| d.is_numeric() && d.datum() == dt)
}

/// Parse the protocol's spelling of a datatype models here take; `None` for unknown names and for `BYTES`.
pub fn parse_numeric(s: &str) -> Option<Datatype> {
    Datatype::parse(s).filter(|d| d.is_numeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_names_round_trip_and_bytes_is_refused() {
        for d in Datatype::ALL.into_iter().filter(|d| d.is_numeric()) {
            assert_eq!(parse_numeric(d.as_str()), Some(d));
            assert_eq!(from_datum(d.datum()), Some(d));
        }
        assert_eq!(parse_numeric("BYTES"), None);
        assert_eq!(parse_numeric("fp32"), None);
        assert_eq!(from_datum(DatumType::String), None);
    }
}
