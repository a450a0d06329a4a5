# The job's Parquet output in pyarrow: money is decimal128(38,4), summed exactly by Arrow
# and returned as a decimal.Decimal. The folders also hold the JSON files, so read the
# *.parquet files by name rather than the folder.
import glob

import pyarrow.compute as pc
import pyarrow.parquet as pq

OUT = "out"

for family in ("time_kpi", "country_kpi"):
    table = pq.ParquetDataset(sorted(glob.glob(f"{OUT}/{family}/*.parquet"))).read()
    print(family, pc.sum(table["total_sale_volume"]).as_py())
