"""The report of one evaluation: one self-contained HTML file and its Markdown twin.

`write_report(path, context)` renders `context` (sections of tables and PNG
figures, and what was evaluated, how and when) with Jinja2 templates into
`path` (`.html`, every image embedded as a base64 data URI, so the file
opens offline and refers to nothing outside itself) and the same path with
`.md`. Values are escaped by the template engine, never pasted as strings.
"""

import base64
import os

import jinja2

from aradals_tf import atomic

_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; }
dt { font-weight: bold; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<dl>
{% for key, value in about %}<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}</dl>
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% if section.text %}<p>{{ section.text }}</p>{% endif %}
{% if section.table %}
<table>
<thead><tr>{% for cell in section.table.header %}<th>{{ cell }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in section.table.body %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% endif %}
{% for figure in section.figures %}
<figure><img alt="{{ figure.caption }}" src="data:image/png;base64,{{ figure.data }}">
<figcaption>{{ figure.caption }}</figcaption></figure>
{% endfor %}
{% endfor %}
</body>
</html>
"""

_MARKDOWN = """# {{ title }}

{% for key, value in about %}- **{{ key }}**: {{ value | md }}
{% endfor %}
{% for section in sections %}
## {{ section.title }}
{% if section.text %}
{{ section.text | md }}
{% endif %}
{% if section.table %}
| {{ section.table.header | map("md") | join(" | ") }} |
|{% for _ in section.table.header %} --- |{% endfor %}
{% for row in section.table.body %}| {{ row | map("md") | join(" | ") }} |
{% endfor %}
{% endif %}
{% for figure in section.figures %}
![{{ figure.caption | md }}](data:image/png;base64,{{ figure.data }})
{% endfor %}
{% endfor %}
"""


def _markdown_escape(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def _environment(autoescape):
    environment = jinja2.Environment(
        autoescape=autoescape, undefined=jinja2.StrictUndefined, trim_blocks=True
    )
    environment.filters["md"] = _markdown_escape
    return environment


def figure(path, caption):
    """A figure for a section: the PNG file at `path`, embedded."""
    with open(path, "rb") as stream:
        return {"data": base64.b64encode(stream.read()).decode("ascii"), "caption": caption}


def write_report(path, context):
    """Writes `path` (HTML) and its `.md` twin from `context`, atomically.

    Args:
        path: the `.html` file to write.
        context: `{"title", "about": [(key, value)], "sections": [{"title",
            "text"?, "table"?: {"header", "body"}, "figures": [figure(...)]}]}`.

    Returns:
        `(html path, markdown path)`.

    Example:

    >>> write_report("report.html", {"title": "run", "about": [], "sections": []})
    """
    sections = [
        {"text": None, "table": None, "figures": [], **section} for section in context["sections"]
    ]
    values = {**context, "sections": sections}
    markdown_path = os.path.splitext(path)[0] + ".md"
    for target, template, escape in ((path, _HTML, True), (markdown_path, _MARKDOWN, False)):
        text = _environment(escape).from_string(template).render(**values)
        with atomic.atomic_file(target) as stream:
            stream.write(text)
    return path, markdown_path
