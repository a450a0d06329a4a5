//! Decoding: a record's bytes to an invoice or a rejection, with the checks of SPEC §7
//! that need nothing but the record (size, UTF-8, JSON, invoice fields), in that order.
//! The time checks (future, late, closed window) and the country cap need the stream's
//! state and belong to [`crate::aggregate`], which never sees bytes.
//!
//! A second input format is a second [`Decoder`]; the job applies whichever it is given.

mod classify;
mod fast;
pub mod invoice;
pub mod parallel;

use crate::record::{Reason, Rejection};
use invoice::{parse_invoice, Invoice, Limits};

/// Turns one record value into an invoice that borrows from it, or says why it cannot.
pub trait Decoder {
    /// `value` is the record's bytes, or only their start when the source did not read a
    /// record past the size limit into memory; `len` is always the whole record's length.
    fn decode<'a>(&self, value: &'a [u8], len: u64) -> Result<Invoice<'a>, Rejection>;
}

/// The JSON invoice of SPEC §1–§2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonInvoiceDecoder {
    pub limits: Limits,
}

impl Decoder for JsonInvoiceDecoder {
    #[inline]
    fn decode<'a>(&self, value: &'a [u8], len: u64) -> Result<Invoice<'a>, Rejection> {
        let limit = self.limits.max_record_bytes;
        // The size check uses the whole length, before anything looks at the bytes.
        if len > limit as u64 {
            return Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "record is {len} bytes, above the limit of {limit} bytes (max_record_bytes)"
                ),
            ));
        }
        parse_invoice(value, &self.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_record_is_judged_by_its_whole_length() {
        let d = JsonInvoiceDecoder {
            limits: Limits {
                max_record_bytes: 10,
                max_items: 10,
            },
        };
        let e = d.decode(b"{}", 11).unwrap_err();
        assert_eq!(e.reason, Reason::TooLarge);
        assert!(e.message.contains("record is 11 bytes"), "{}", e.message);
        assert_eq!(
            d.decode(b"{}", 2).unwrap_err().reason,
            Reason::InvalidInvoice
        );
    }
}
