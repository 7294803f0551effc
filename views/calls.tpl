<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
% if tried is None:
<meta http-equiv="refresh" content="30">
% end
<title>Calls {{day.isoformat()}} · popup-server</title>
<style>
  :root { --missed: #b42318; --ok: #067647; --muted: #667085; --line: #eaecf0; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Arial, "Noto Sans Hebrew", sans-serif;
         margin: 0 auto; max-width: 72rem; padding: 1rem; color: #101828; }
  h1 { font-size: 1.3rem; margin: 0 0 .75rem; }
  h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
  .status { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; padding: .6rem .8rem;
            background: #f9fafb; border: 1px solid var(--line); border-radius: .5rem; }
  .status .error { color: var(--missed); font-weight: 600; flex-basis: 100%; }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin: .75rem 0; }
  input[type=tel], input[type=date] { font: inherit; padding: .35rem .5rem; border: 1px solid #d0d5dd;
            border-radius: .375rem; }
  button { font: inherit; padding: .35rem .9rem; border: 0; border-radius: .375rem;
           background: #1d4ed8; color: #fff; cursor: pointer; }
  pre { background: #f2f4f7; padding: .6rem .8rem; border-radius: .375rem; overflow-x: auto;
        white-space: pre-wrap; word-break: break-all; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: start; padding: .45rem .5rem; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  th { font-size: .8rem; color: var(--muted); font-weight: 600; }
  tr.missed td.outcome { color: var(--missed); font-weight: 700; }
  tr.answered td.outcome { color: var(--ok); }
  .muted { color: var(--muted); }
  .nav a { margin-inline-end: 1rem; }
  @media (max-width: 40rem) {
    thead { display: none; }
    tr { display: block; border-bottom: 1px solid var(--line); padding: .4rem 0; }
    td { display: inline-block; border: 0; padding: .15rem .5rem .15rem 0; }
    td.name { display: block; font-weight: 600; }
  }
</style>
</head>
<body>
% tok = ("&token=" + quote(token, safe="")) if token else ""
<h1>Calls of {{day.strftime("%A %d %B %Y")}}</h1>

<div class="status" id="status">
  <span>File: <b>{{health["source"]}}</b></span>
  <span><b id="contacts">{{health["contacts"]}}</b> contacts, {{health["numbers"]}} numbers</span>
  <span>Loaded {{health["loaded_at"].replace("T", " ")}}</span>
  % if health["last_error"]:
  <span class="error" id="last-error">Last reload failed: {{health["last_error"]}}</span>
  % end
</div>

<h2>Try a number</h2>
<form method="get" action="" id="try-form">
  % if token:
  <input type="hidden" name="token" value="{{token}}">
  % end
  <input type="hidden" name="day" value="{{day.isoformat()}}">
  <label for="try">Caller's number</label>
  <input type="tel" id="try" name="try" value="{{tried or ''}}" placeholder="0722776772" dir="ltr">
  <button type="submit">Look up</button>
</form>
% if tried_answer is not None:
<p id="try-result">
  % if tried_answer["TOTAL"]:
  <bdi><b>{{tried_answer["CLIENTNAME"]}}</b></bdi>
  % if tried_answer["COMPANY"]:
  · <bdi>{{tried_answer["COMPANY"]}}</bdi>
  % end
  % if tried_answer["TOTAL"] > 1:
  <span class="muted">(and {{tried_answer["TOTAL"] - 1}} more with this number)</span>
  % end
  % else:
  Nobody in the contacts has this number.
  % end
</p>
<p class="muted">What Voicenter gets:</p>
<pre id="try-json" dir="ltr">{{tried_json}}</pre>
% end

<h2>Calls</h2>
<div class="nav">
  <a href="?day={{(day - day.resolution).isoformat()}}{{tok}}">&larr; previous day</a>
  % if day < today:
  <a href="?day={{(day + day.resolution).isoformat()}}{{tok}}">next day &rarr;</a>
  <a href="?day={{today.isoformat()}}{{tok}}">today</a>
  % end
  <a href="calls.csv?day={{day.isoformat()}}{{tok}}" id="csv-link">download as CSV (Excel)</a>
</div>
<form method="get" action="" id="day-form">
  % if token:
  <input type="hidden" name="token" value="{{token}}">
  % end
  <label for="day">Day</label>
  <input type="date" id="day" name="day" value="{{day.isoformat()}}" max="{{today.isoformat()}}">
  <button type="submit">Show</button>
</form>
% if not recording:
<p class="muted">Calls are not being recorded (the server was started with an empty --calls-db).</p>
% elif calls_error:
<p class="status error">{{calls_error}}</p>
% elif not calls:
<p class="muted" id="no-calls">No calls on this day yet.</p>
% else:
% missed = sum(1 for c in calls if c.outcome == "missed")
<p><b>{{missed}}</b> missed, {{sum(1 for c in calls if c.outcome == "answered")}} answered,
   {{sum(1 for c in calls if c.outcome == "in progress")}} in progress.</p>
<table id="calls">
<thead><tr><th>Time</th><th>Outcome</th><th>Caller</th><th>Number</th><th>Tries today</th>
<th>Answered by</th><th>Duration</th><th>Links</th></tr></thead>
<tbody>
% for call in calls:
<tr class="{{call.outcome.replace(' ', '-')}}">
  <td>{{call.started.strftime("%H:%M:%S")}}</td>
  <td class="outcome">{{call.outcome}}</td>
  <td class="name"><bdi>{{call.name or "unknown caller"}}</bdi>
    % if call.company and call.company != call.name:
    <br><span class="muted"><bdi>{{call.company}}</bdi></span>
    % end
  </td>
  <td dir="ltr">{{call.caller or "withheld"}}</td>
  <td>{{call.tries}}</td>
  <td>{{call.answered_by}}</td>
  <td>{{"" if call.duration is None else "%d:%02d" % divmod(call.duration, 60)}}</td>
  <td>
    % if call.e164:
    <a href="tel:{{call.e164}}">call back</a>
    % end
    % if call.url.startswith(("http://", "https://")):
    · <a href="{{call.url}}" rel="noopener noreferrer" target="_blank">CRM</a>
    % end
  </td>
</tr>
% end
</tbody>
</table>
% end
<p class="muted">This page refreshes itself every 30 seconds. Status for monitors: <a href="health">/health</a>.</p>
</body>
</html>
