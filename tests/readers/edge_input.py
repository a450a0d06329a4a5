# Hand-made invoices at the edges of SPEC §1 for the readers' exactness check
# (tests/readers.rs): `python edge_input.py > in.jsonl`. All are accepted by the job.
import json, sys
out = sys.stdout
def inv(no, country, ts, typ, items):
    out.write(json.dumps({"invoice_no": no, "country": country, "timestamp": ts, "type": typ,
        "items": [{"SKU": "S", "title": "T", "unit_price": p, "quantity": q} for p, q in items]},
        ensure_ascii=False).replace('"@P', '').replace('P@"', '') + "\n")
def P(s):  # a JSON number written verbatim
    return "@P" + s + "P@"
n = 1
def nxt():
    global n; n += 1; return n
# year 0 and the epoch first (ascending event time, so nothing is late)
inv(nxt(), "Nowhere", "0000-01-01 00:00:00", "ORDER", [(P("0.0001"), 1)])
inv(nxt(), "EIRE", "1970-01-01 00:00:00", "ORDER", [(P("50"), 1), (P("25"), 1)])
inv(nxt(), "EIRE", "1970-01-01 00:00:30", "ORDER", [(P("25"), 1)])
# one minute: an order and a return that cancel (total 0), and -2.5
inv(nxt(), "Côte d'Ivoire", "2020-09-18 09:00:00", "ORDER", [(P("12.3456"), 2)])
inv(nxt(), "Côte d'Ivoire", "2020-09-18 09:00:01", "RETURN", [(P("12.3456"), 2)])
inv(nxt(), 'A "quoted" \\ back\u0001slash', "2020-09-18 09:00:02", "RETURN", [(P("2.5"), 1)])
inv(nxt(), "日本 🎌", "2020-09-18 09:00:03", "ORDER", [(P("1"), 1)] )
inv(nxt(), "  padded  ", "2020-09-18 09:00:04", "ORDER", [(P("0.0001"), 3)])
# 1/32 returns -> 0.0312 (half even); 1/3 -> 0.3333
for i in range(32):
    inv(nxt(), "Ratio", "2020-09-18 09:01:%02d" % (i % 60), "RETURN" if i == 0 else "ORDER", [(P("1.0001"), 1)])
for i in range(3):
    inv(nxt(), "Third", "2020-09-18 09:02:%02d" % i, "RETURN" if i == 0 else "ORDER", [(P("3.3333"), 7)])
# huge money: near the per-item maximum, fractional, beyond f64 and i64 ten-thousandths;
# 300 invoices x 10000 items push the family sums past 28 significant digits
# (Python's default decimal context) - about 3e24 with 4 decimals.
big = [(P("999999999.9999"), 999999999)] * 9999 + [(P("0.0003"), 1)]
for i in range(300):
    inv(nxt(), "Bigland" if i % 3 else "Biggerland", "2020-09-18 09:%02d:%02d" % (3 + i // 60, i % 60), "ORDER", big)
# a big return, so a window total is a large negative number
inv(nxt(), "Bigland", "2020-09-18 09:09:00", "RETURN", [(P("999999999.9999"), 999999999), (P("0.0001"), 7)])
# the last minute of year 9999
inv(nxt(), "EIRE", "9999-12-31 23:59:59", "ORDER", [(P("1000000000"), 1000000000)])
