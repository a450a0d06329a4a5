-- The job's JSON output in DuckDB, money exact as DECIMAL(38,4): `duckdb < json_duckdb.sql`.
-- Set the output folder here:
SET VARIABLE out = 'out';

-- `window` is an SQL keyword (so are `start` and `end`): quote them. read_json parses the
-- numbers into DECIMAL exactly. total_items is DECIMAL(38,0): it may exceed BIGINT.
CREATE TEMP VIEW time_kpi AS
SELECT "window"."start" AS window_start, "window"."end" AS window_end, * EXCLUDE ("window")
FROM read_json(getvariable('out') || '/time_kpi/*.json', format = 'newline_delimited', columns = {
    'window': 'STRUCT("start" TIMESTAMPTZ, "end" TIMESTAMPTZ)', 'OPM': 'BIGINT',
    'total_sale_volume': 'DECIMAL(38,4)', 'average_transaction_size': 'DECIMAL(38,4)',
    'rate_of_return': 'DECIMAL(5,4)', 'orders': 'BIGINT', 'returns': 'BIGINT',
    'total_items': 'DECIMAL(38,0)'});

CREATE TEMP VIEW country_kpi AS
SELECT "window"."start" AS window_start, "window"."end" AS window_end, * EXCLUDE ("window")
FROM read_json(getvariable('out') || '/country_kpi/*.json', format = 'newline_delimited', columns = {
    'window': 'STRUCT("start" TIMESTAMPTZ, "end" TIMESTAMPTZ)', 'country': 'VARCHAR',
    'OPM': 'BIGINT', 'total_sale_volume': 'DECIMAL(38,4)', 'rate_of_return': 'DECIMAL(5,4)',
    'orders': 'BIGINT', 'returns': 'BIGINT', 'total_items': 'DECIMAL(38,0)'});

SELECT 'time_kpi' AS family, sum(total_sale_volume) AS total_sale_volume FROM time_kpi
UNION ALL
SELECT 'country_kpi', sum(total_sale_volume) FROM country_kpi;
