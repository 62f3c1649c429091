"""HTML building blocks of the report: the style sheet, the one script, escaping and small widgets.

Every user-controlled string goes through :func:`e`. The page runs exactly one script,
:data:`SORT_SCRIPT` (fixed text, no user data): clicking a column header of a ``table.sortable``
sorts its rows by the cells' ``data-v`` values.
"""
from __future__ import annotations

import html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #eee;padding-bottom:4px;margin-top:36px}
.muted{color:#666} table{border-collapse:collapse;margin:8px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap} .card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{font-size:1.6em;display:block} .flag{border-color:#d33;background:#fff5f5}
.thumbs{display:flex;flex-wrap:wrap;gap:6px} .thumb{text-align:center;font-size:11px;color:#555}
.thumb img{display:block;border:1px solid #ccc;image-rendering:pixelated}
.bar{background:#d55e00;height:10px;display:inline-block;vertical-align:middle}
.cls{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap;margin-bottom:18px;border-bottom:1px dashed #eee;padding-bottom:12px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
.box{position:relative;display:inline-block} .box span{position:absolute;border:2px solid #0a0;box-sizing:border-box}
.scroll{max-height:460px;overflow:auto;border:1px solid #eee} .scroll th{position:sticky;top:0;background:#fff}
table.sortable th{cursor:pointer;user-select:none} table.sortable th:hover{background:#f3f3f3}
tr.flagged td{background:#fff5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
"""

SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0], rows=Array.prototype.slice.call(body.rows), up=th.dataset.dir!=='up';
      t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir;});
      th.dataset.dir=up?'up':'down';
      rows.sort(function(a,b){
        var x=a.cells[i].dataset.v, y=b.cells[i].dataset.v, nx=parseFloat(x), ny=parseFloat(y);
        var c=(isNaN(nx)||isNaN(ny))?String(x).localeCompare(String(y)):nx-ny;
        return up?c:-c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def e(value) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return e(v)


def thumb(src: str, caption: str, width: int = 96, title: str = "") -> str:
    return (f'<div class="thumb" title="{e(title)}"><img src="{src}" width="{width}" alt="{e(caption)}">'
            f'{e(caption)}</div>')


def windowed(src: str, window, pixels: int, width: int = 96) -> str:
    """An image with the (row0, col0, row1, col1) window of its ``pixels``-wide grid outlined in green."""
    r0, c0, r1, c1 = window
    f = width / pixels
    return (f'<div class="box"><img src="{src}" width="{width}" style="image-rendering:pixelated;border:1px solid #ccc">'
            f'<span style="top:{r0 * f:.0f}px;left:{c0 * f:.0f}px;width:{(c1 - c0) * f:.0f}px;'
            f'height:{(r1 - r0) * f:.0f}px"></span></div>')


def cell(text: str, sort_value=None, numeric: bool = False) -> str:
    """A table cell showing ``text`` (already HTML) that sorts by ``sort_value`` (default: the text)."""
    v = text if sort_value is None else sort_value
    if isinstance(v, float):
        v = f"{v:.6g}"
    return f'<td data-v="{e(v)}"{" class=num" if numeric else ""}>{text}</td>'
