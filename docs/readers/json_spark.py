# The job's JSON output in PySpark, money exact as DecimalType(38,4): with an explicit
# schema Spark parses each number straight into a Decimal. FAILFAST makes a value that does
# not fit an error instead of a silent null.
from pyspark.sql import SparkSession, functions as F
from pyspark.sql.types import (DecimalType, LongType, StringType, StructField, StructType,
                               TimestampType)

OUT = "out"

MONEY = DecimalType(38, 4)
WINDOW = StructField("window", StructType([StructField("start", TimestampType()),
                                           StructField("end", TimestampType())]))
COUNTS = [StructField("orders", LongType()), StructField("returns", LongType()),
          StructField("total_items", DecimalType(38, 0))]  # may exceed a long
SCHEMA = {
    "time_kpi": StructType([WINDOW, StructField("OPM", LongType()),
                            StructField("total_sale_volume", MONEY),
                            StructField("average_transaction_size", MONEY),
                            StructField("rate_of_return", DecimalType(5, 4)), *COUNTS]),
    "country_kpi": StructType([WINDOW, StructField("country", StringType()),
                               StructField("OPM", LongType()),
                               StructField("total_sale_volume", MONEY),
                               StructField("rate_of_return", DecimalType(5, 4)), *COUNTS]),
}

spark = (SparkSession.builder.master("local[*]")
         .config("spark.sql.session.timeZone", "UTC").getOrCreate())
for family, schema in SCHEMA.items():
    df = spark.read.schema(schema).option("mode", "FAILFAST").json(f"{OUT}/{family}/*.json")
    print(family, df.agg(F.sum("total_sale_volume")).first()[0])
spark.stop()
