//! The Parquet bytes of a bucket (`--format parquet|both`): the same rows as the JSON file
//! of the same name, in the same order, with types that keep every figure exact: money
//! as DECIMAL(38,4), the rate of return as DECIMAL(5,4), window bounds as UTC timestamps.
//!
//! The bytes are a function of the rows alone, because a file once there never changes and
//! a restart after a crash must write the same bytes again (the committer refuses other
//! bytes under a name): the writer's settings are fixed here, `created_by` names this
//! layout instead of the library's version, no Arrow schema is embedded (readers take
//! every type from Parquet's own logical types), and each file is one row group.
//! Upgrading the parquet crate may still change the bytes of a writer's pages; the
//! regression corpus (`tests/fixtures/regression/`) holds Parquet files, so such a change
//! shows as a test failure, not as a conflict in production.

use super::render::Family;
use crate::aggregate::partial::{Agg, WindowAgg};
use crate::event_time::WINDOW_SECS;
use arrow_array::{
    ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use std::sync::Arc;

/// What the files say wrote them; changes only with the layout of this module.
pub const CREATED_BY: &str = "retail-kpi parquet layout 1";

/// Money: 38 digits, 4 of them after the point (SPEC §2 fixes the scale).
const MONEY: DataType = DataType::Decimal128(38, 4);
/// The rate of return lies in [0, 1] with 4 places.
const RATE: DataType = DataType::Decimal128(5, 4);
/// Σ quantity: an integer the decoder's limits let grow beyond INT64, so a DECIMAL of
/// scale 0, which every reader maps to an exact integer or decimal.
const ITEMS: DataType = DataType::Decimal128(38, 0);
/// The largest magnitude a DECIMAL(38, s) holds, as an unscaled integer.
const MAX_38: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// A figure beyond what its column holds. The decoder's limits keep every figure well
/// inside (README "Output"), so this means limits raised past them.
#[derive(Debug, thiserror::Error)]
#[error("{column} = {value} does not fit its Parquet column ({kind}); the job's limits keep figures inside it: lower --max-items or --max-record-bytes, or write --format json")]
pub struct EncodeError {
    pub column: &'static str,
    pub value: String,
    pub kind: &'static str,
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The columns of `family`'s files, in order.
pub fn schema(family: Family) -> Arc<Schema> {
    let mut fields = vec![
        Field::new("window_start", timestamp(), false),
        Field::new("window_end", timestamp(), false),
    ];
    if family == Family::Country {
        fields.push(Field::new("country", DataType::Utf8, false));
    }
    fields.push(Field::new("OPM", DataType::Int64, false));
    fields.push(Field::new("total_sale_volume", MONEY, false));
    if family == Family::Time {
        fields.push(Field::new("average_transaction_size", MONEY, false));
    }
    fields.extend([
        Field::new("rate_of_return", RATE, false),
        Field::new("orders", DataType::Int64, false),
        Field::new("returns", DataType::Int64, false),
        Field::new("total_items", ITEMS, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The columns of the rows, filled row by row.
#[derive(Default)]
struct Columns {
    start: Vec<i64>,
    end: Vec<i64>,
    country: Vec<String>,
    opm: Vec<i64>,
    volume: Vec<i128>,
    average: Vec<i128>,
    rate: Vec<i128>,
    orders: Vec<i64>,
    returns: Vec<i64>,
    items: Vec<i128>,
}

fn int64(column: &'static str, v: u64) -> Result<i64, EncodeError> {
    i64::try_from(v).map_err(|_| EncodeError {
        column,
        value: v.to_string(),
        kind: "INT64",
    })
}

fn decimal38(column: &'static str, v: i128) -> Result<i128, EncodeError> {
    if v.unsigned_abs() > MAX_38 as u128 {
        return Err(EncodeError {
            column,
            value: v.to_string(),
            kind: "DECIMAL(38)",
        });
    }
    Ok(v)
}

impl Columns {
    fn push(&mut self, start: i64, country: Option<&str>, a: &Agg) -> Result<(), EncodeError> {
        const MICROS: i64 = 1_000_000;
        self.start.push(start * MICROS);
        self.end.push((start + WINDOW_SECS) * MICROS);
        if let Some(c) = country {
            self.country.push(c.to_owned());
        } else {
            self.average.push(decimal38(
                "average_transaction_size",
                a.average_transaction_size().0,
            )?);
        }
        self.opm.push(int64("OPM", a.opm)?);
        self.volume
            .push(decimal38("total_sale_volume", a.volume.0)?);
        self.rate.push(a.rate_of_return().0);
        self.orders.push(int64("orders", a.orders)?);
        self.returns.push(int64("returns", a.returns)?);
        let items = i128::try_from(a.total_items).unwrap_or(i128::MAX);
        self.items.push(decimal38("total_items", items)?);
        Ok(())
    }

    fn into_arrays(self, family: Family) -> Vec<ArrayRef> {
        let ts = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
        };
        let dec = |v: Vec<i128>, t: &DataType| -> ArrayRef {
            let DataType::Decimal128(p, s) = t else {
                unreachable!("only decimal columns are built here")
            };
            Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(*p, *s)
                    .expect("precision and scale are valid constants"),
            )
        };
        let mut arrays = vec![ts(self.start), ts(self.end)];
        if family == Family::Country {
            arrays.push(Arc::new(StringArray::from(self.country)));
        }
        arrays.push(Arc::new(Int64Array::from(self.opm)));
        arrays.push(dec(self.volume, &MONEY));
        if family == Family::Time {
            arrays.push(dec(self.average, &MONEY));
        }
        arrays.extend([
            dec(self.rate, &RATE),
            Arc::new(Int64Array::from(self.orders)) as ArrayRef,
            Arc::new(Int64Array::from(self.returns)),
            dec(self.items, &ITEMS),
        ]);
        arrays
    }
}

/// The fixed writer settings every file is written with.
fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_created_by(CREATED_BY.to_owned())
        .set_writer_version(WriterVersion::PARQUET_1_0)
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        // One row group per file, whatever its size: the grouping never depends on a
        // default of the library.
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .build()
}

/// One file's bytes for `family`, from a bucket's windows in start order; empty when
/// there is no row (as the JSON rendering, so no file is written).
pub fn encode_bucket(
    family: Family,
    windows: &[(i64, &WindowAgg)],
) -> Result<Vec<u8>, EncodeError> {
    let mut cols = Columns::default();
    for (start, w) in windows {
        match family {
            Family::Time => cols.push(*start, None, &w.world)?,
            Family::Country => {
                for (country, a) in w.sorted_countries() {
                    cols.push(*start, Some(country), a)?;
                }
            }
        }
    }
    if cols.start.is_empty() {
        return Ok(Vec::new());
    }
    let schema = schema(family);
    let batch = RecordBatch::try_new(Arc::clone(&schema), cols.into_arrays(family))
        .expect("the columns match the schema by construction");
    let mut out = Vec::new();
    let options = ArrowWriterOptions::new()
        .with_properties(properties())
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(&mut out, schema, options)
        .expect("the schema is one Parquet supports");
    writer.write(&batch).expect("writing to memory cannot fail");
    writer.close().expect("writing to memory cannot fail");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::render::tests::agg;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn declared_types_are_the_contract() {
        let w = WindowAgg {
            world: agg(12, 1, 3_456_700, 87),
            ..WindowAgg::default()
        };
        let bytes = encode_bucket(Family::Time, &[(1_600_426_500, &w)]).unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 1);
        assert_eq!(meta.file_metadata().num_rows(), 1);
        assert_eq!(meta.file_metadata().created_by(), Some(CREATED_BY));
        assert!(meta.file_metadata().key_value_metadata().is_none());
        let schema = meta.file_metadata().schema_descr();
        let declared: Vec<(String, String)> = (0..schema.num_columns())
            .map(|i| {
                let c = schema.column(i);
                (c.name().to_owned(), format!("{:?}", c.logical_type_ref()))
            })
            .collect();
        let ts = "Some(Timestamp(TimestampType { is_adjusted_to_u_t_c: true, unit: MICROS }))";
        let money = "Some(Decimal(DecimalType { scale: 4, precision: 38 }))";
        let want = [
            ("window_start", ts),
            ("window_end", ts),
            ("OPM", "None"),
            ("total_sale_volume", money),
            ("average_transaction_size", money),
            (
                "rate_of_return",
                "Some(Decimal(DecimalType { scale: 4, precision: 5 }))",
            ),
            ("orders", "None"),
            ("returns", "None"),
            (
                "total_items",
                "Some(Decimal(DecimalType { scale: 0, precision: 38 }))",
            ),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        assert_eq!(declared, want);
    }

    fn with_country(w: &WindowAgg) -> WindowAgg {
        let mut c = w.clone();
        c.countries.insert("X".into(), w.world);
        c
    }

    #[test]
    fn no_rows_no_bytes() {
        let w = WindowAgg::default();
        assert!(encode_bucket(Family::Country, &[(0, &w)])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_figure_beyond_its_column_is_an_error_not_a_wrong_file() {
        let w = WindowAgg {
            world: agg(1, 0, MAX_38 + 1, 1),
            ..WindowAgg::default()
        };
        let e = encode_bucket(Family::Country, &[(0, &with_country(&w))]).unwrap_err();
        assert_eq!(e.column, "total_sale_volume");
        let e = encode_bucket(Family::Time, &[(0, &w)]).unwrap_err();
        assert_eq!(e.column, "average_transaction_size");
        let w = WindowAgg {
            world: agg(1, 0, 1, u128::MAX),
            ..WindowAgg::default()
        };
        assert_eq!(
            encode_bucket(Family::Time, &[(0, &w)]).unwrap_err().column,
            "total_items"
        );
    }
}
