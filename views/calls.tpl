%# The calls page: the layout and the texts table (t); see render_page() for the rest.
% rebase("layout", title=t("calls.title") + " " + day.isoformat(), refresh=30 if tried is None else None)
<h1>{{t("calls.heading", date=t.date(day))}}</h1>

<div class="status" id="status">
  <span>{{t("status.file")}} <bdi><b>{{health["source"]}}</b></bdi></span>
  <span><b id="contacts">{{health["contacts"]}}</b> {{t("status.contacts")}}, {{health["numbers"]}} {{t("status.numbers")}}</span>
  <span>{{t("status.loaded")}} <bdi>{{health["loaded_at"].replace("T", " ")}}</bdi></span>
  % if health["last_error"]:
  <span class="error" id="last-error">{{t("status.last_error")}} <bdi>{{health["last_error"]}}</bdi></span>
  % end
</div>

<h2>{{t("try.heading")}}</h2>
<form method="get" action="" id="try-form">
  <input type="hidden" name="day" value="{{day.isoformat()}}">
  <label for="try">{{t("try.label")}}</label>
  <input type="tel" id="try" name="try" value="{{tried or ''}}" placeholder="0722776772" dir="ltr">
  <button type="submit">{{t("try.submit")}}</button>
</form>
% if tried_answer is not None:
<p id="try-result">
  % if tried_answer["TOTAL"]:
  <bdi><b>{{tried_answer["CLIENTNAME"]}}</b></bdi>
  % if tried_answer["COMPANY"]:
  · <bdi>{{tried_answer["COMPANY"]}}</bdi>
  % end
  % if tried_answer["TOTAL"] > 1:
  <span class="muted">{{t("try.more", count=tried_answer["TOTAL"] - 1)}}</span>
  % end
  % else:
  {{t("try.nobody")}}
  % end
</p>
<p class="muted">{{t("try.voicenter")}}</p>
<pre id="try-json" dir="ltr">{{tried_json}}</pre>
% end

<h2>{{t("calls.title")}}</h2>
<div class="nav">
  <a href="?day={{(day - day.resolution).isoformat()}}">{{t("nav.previous")}}</a>
  % if day < today:
  <a href="?day={{(day + day.resolution).isoformat()}}">{{t("nav.next")}}</a>
  <a href="?day={{today.isoformat()}}">{{t("nav.today")}}</a>
  % end
  <a href="calls.csv?day={{day.isoformat()}}" id="csv-link">{{t("nav.csv")}}</a>
</div>
<form method="get" action="" id="day-form">
  <label for="day">{{t("day.label")}}</label>
  <input type="date" id="day" name="day" value="{{day.isoformat()}}" max="{{today.isoformat()}}">
  <button type="submit">{{t("day.submit")}}</button>
</form>
% if not recording:
<p class="muted">{{t("calls.not_recording")}}</p>
% elif calls_error:
<p class="status error">{{calls_error}}</p>
% elif not calls:
<p class="muted" id="no-calls">{{t("calls.none")}}</p>
% else:
% missed = sum(1 for c in calls if c.outcome == "missed")
<p><b>{{missed}}</b> {{t("summary.missed")}}, {{sum(1 for c in calls if c.outcome == "answered")}} {{t("summary.answered")}},
   {{sum(1 for c in calls if c.outcome == "in progress")}} {{t("summary.in_progress")}}.</p>
<table id="calls">
<thead><tr><th>{{t("col.time")}}</th><th>{{t("col.outcome")}}</th><th>{{t("col.caller")}}</th><th>{{t("col.number")}}</th><th>{{t("col.tries")}}</th>
<th>{{t("col.answered_by")}}</th><th>{{t("col.duration")}}</th><th>{{t("col.links")}}</th></tr></thead>
<tbody>
% for call in calls:
<tr class="{{call.outcome.replace(' ', '-')}}">
  <td dir="ltr">{{call.started.strftime("%H:%M:%S")}}</td>
  <td class="outcome">{{t("outcome." + call.outcome, default=call.outcome)}}</td>
  <td class="name"><bdi>{{call.name or t("caller.unknown")}}</bdi>
    % if call.company and call.company != call.name:
    <br><span class="muted"><bdi>{{call.company}}</bdi></span>
    % end
  </td>
  <td dir="ltr">{{call.caller or t("caller.withheld")}}</td>
  <td>{{call.tries}}</td>
  <td><bdi>{{call.answered_by}}</bdi></td>
  <td dir="ltr">{{"" if call.duration is None else "%d:%02d" % divmod(call.duration, 60)}}</td>
  <td>
    % if call.e164:
    <a href="tel:{{call.e164}}">{{t("link.call_back")}}</a>
    % end
    % if call.url.startswith(("http://", "https://")):
    · <a href="{{call.url}}" rel="noopener noreferrer" target="_blank">{{t("link.crm")}}</a>
    % end
  </td>
</tr>
% end
</tbody>
</table>
% end
<p class="muted">{{t("calls.footer")}} <a href="health">/health</a>.</p>
