-- The job's Parquet output in DuckDB: `duckdb < parquet_duckdb.sql`. The files carry their
-- types (DECIMAL(38,4) money, TIMESTAMPTZ windows), so nothing needs declaring.
-- Set the output folder here:
SET VARIABLE out = 'out';

CREATE TEMP VIEW time_kpi AS SELECT * FROM read_parquet(getvariable('out') || '/time_kpi/*.parquet');
CREATE TEMP VIEW country_kpi AS SELECT * FROM read_parquet(getvariable('out') || '/country_kpi/*.parquet');

SELECT 'time_kpi' AS family, sum(total_sale_volume) AS total_sale_volume FROM time_kpi
UNION ALL
SELECT 'country_kpi', sum(total_sale_volume) FROM country_kpi;
