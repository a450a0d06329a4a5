# The job's Parquet output in PySpark: money is DecimalType(38,4), windows TimestampType.
# The files hold proleptic Gregorian times: CORRECTED reads times before 1582 as they are.
# It is the default from Spark 4; Spark 3 defaults to EXCEPTION and refuses such times.
from pyspark.sql import SparkSession, functions as F

OUT = "out"

spark = (SparkSession.builder.master("local[*]")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.sql.parquet.datetimeRebaseModeInRead", "CORRECTED")
         .getOrCreate())
for family in ("time_kpi", "country_kpi"):
    df = spark.read.parquet(f"{OUT}/{family}/*.parquet")
    print(family, df.agg(F.sum("total_sale_volume")).first()[0])
spark.stop()
