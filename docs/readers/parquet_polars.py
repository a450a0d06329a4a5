# The job's Parquet output in polars: money is Decimal(38,4), windows Datetime("us", "UTC").
import polars as pl

OUT = "out"

for family in ("time_kpi", "country_kpi"):
    df = pl.read_parquet(f"{OUT}/{family}/*.parquet")
    print(family, df["total_sale_volume"].sum())
