# The job's JSON output in polars, money exact as Decimal(38,4).
# Polars' JSON readers (read_ndjson, str.json_decode) parse every number as f64 first, even
# with a pl.Decimal schema, which rounds amounts past ~15 significant digits. So the money
# columns are cut from each line's text and cast from String to Decimal, which is exact
# (pl.scan_lines is marked unstable in polars 2.1). The job writes a fixed compact layout
# (SPEC §5), and `,"name":` cannot occur inside a JSON string.
import polars as pl

OUT = "out"

def exact(name, dtype):
    text = pl.col("line").str.extract(f',"{name}":(-?[0-9.]+)')
    return text.cast(dtype).alias(name)

OTHER = {"window": pl.Struct({"start": pl.String, "end": pl.String}), "country": pl.String,
         "OPM": pl.Int64, "orders": pl.Int64, "returns": pl.Int64}

for family in ("time_kpi", "country_kpi"):
    df = pl.scan_lines(f"{OUT}/{family}/*.json").select(
        pl.col("line").str.json_decode(pl.Struct(OTHER)).struct.unnest(),
        exact("total_sale_volume", pl.Decimal(38, 4)),
        exact("average_transaction_size", pl.Decimal(38, 4)),  # null in country_kpi
        exact("rate_of_return", pl.Decimal(5, 4)),
        exact("total_items", pl.Decimal(38, 0)),
    ).collect()
    print(family, df["total_sale_volume"].sum())
