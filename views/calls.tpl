%# The calls page: the layout and the texts table (t); the values: see calls_page().
%# The morning view first (missed callers still waiting, then those dealt with), then
%# the day's calls, newest first. Lists come a page (page_size) at a time.
% rebase("layout", title=t("calls.title") + " · " + t.date(day), refresh=60 if tried is None and editing is None else None)
% def clock(moment, seconds=False):
%   return t.time(moment, day, seconds)
% end
% def pages(kind, start, total):
%   other, other_from = ("callers", callers_from) if kind == "calls" else ("calls", calls_from)
%   if total > page_size:
<p class="nav pages" id="{{kind}}-pages">
  <span class="muted">{{t("page.range", first=start + 1, last=min(start + page_size, total), total=total)}}</span>
  % if start > 0:
  <a href="{{link(**{kind: max(0, start - page_size), other: other_from})}}" class="previous">{{t("page.previous", size=page_size)}}</a>
  % end
  % if start + page_size < total:
  <a href="{{link(**{kind: start + page_size, other: other_from})}}" class="next">{{t("page.next", size=page_size)}}</a>
  % end
</p>
%   end
% end
% def who(name, company, caller, e164, dial=True):
  <bdi><b>{{name or t("caller.unknown")}}</b></bdi>
  % if company and company != name:
  <br><span class="muted"><bdi>{{company}}</bdi></span>
  % end
  <br>
  % if e164:
  <a href="/caller/{{e164}}" dir="ltr" class="number">{{number_text(e164)}}</a>
  % if dial:
  · <a href="tel:{{e164}}">{{t("link.call_back")}}</a>
  % end
  % else:
  <span dir="ltr">{{caller or t("caller.withheld")}}</span>
  % end
% end
<h1>{{t("calls.heading", date=t.date(day))}}</h1>

<div class="status" id="status">
  <span>{{t("status.file")}} <bdi><b>{{health["source"]}}</b></bdi></span>
  <span><b id="contacts">{{health["contacts"]}}</b> {{t("status.contacts")}}, {{health["numbers"]}} {{t("status.numbers")}}</span>
  <span>{{t("status.loaded")}} <bdi id="loaded-at">{{t.time(loaded_at, today)}}</bdi></span>
  <span id="time-zone">{{t("status.zone", zone="\u2068" + zone_name + "\u2069")}}</span>
  % if callback is not None:
  <span id="voicenter-status"{{!' class="error"' if callback.problem else ""}}>{{t("voicenter.status")}}
  % if callback.problem:
    {{t("voicenter." + callback.problem_kind, time=clock(callback.problem_at))}}{{":" if callback.problem_kind == "failed" else ""}}
    % if callback.problem_kind == "failed":
    <bdi dir="ltr">{{callback.problem}}</bdi>
    % end
    ({{t("voicenter.kept", count=len(callback.extensions), time=clock(callback.fetched)) if callback.extensions else t("voicenter.by_code")}})
  % elif callback.fetched is None:
    {{t("voicenter.fetching")}}
  % else:
    {{t("voicenter.ok", count=len(callback.extensions), time=clock(callback.fetched))}}
  % end
  </span>
  % end
  % if health["last_error"]:
  <span class="error" id="last-error">{{t("status.last_error")}} <bdi>{{health["last_error"]}}</bdi></span>
  % end
  % if sent_flags[0]:
  <span class="error" id="flag-phases">{{t("status.flag_phases", count=sent_flags[0])}} <a href="/sent">{{t("status.see_sent")}}</a></span>
  % end
  % if sent_flags[1]:
  <span class="error" id="flag-times">{{t("status.flag_times", count=sent_flags[1])}} <a href="/sent">{{t("status.see_sent")}}</a></span>
  % end
  % if call_log:
  %   trouble, detail, pulled_at = call_log
  %   if trouble:
  <span class="error" id="call-log" data-trouble="{{trouble}}">{{t("call_log." + trouble, detail=detail)}} {{t("call_log.last_good", time=t.time(pulled_at, today)) if pulled_at else t("call_log.never")}}</span>
  %   elif pulled_at:
  <span id="call-log">{{t("call_log.pulled", time=t.time(pulled_at, today))}}</span>
  %   else:
  <span id="call-log">{{t("call_log.waiting")}}</span>
  %   end
  % end
</div>
% if callback is not None:
% include("callback_answer", t=t, callback=callback)
% end
%# Calling back needs Voicenter's extension list: without one (a wrong code, an address
%# Voicenter refuses) no button could ring anyone, and the tel: links stay instead.
% if callback is not None and callback.extensions:
<form method="post" action="/callback/extension" id="extension-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="next" value="{{here}}">
  <label for="extension">{{t("callback.my_extension")}}</label>
  <select id="extension" name="extension">
    <option value="">{{t("callback.choose")}}</option>
    % for extension in callback.extensions:
    <option value="{{extension.sip}}"{{!" selected" if extension.sip == callback.mine else ""}}>{{extension.name}}{{" · " + extension.speed_dial if extension.speed_dial else ""}}</option>
    % end
  </select>
  <button type="submit" id="extension-submit">{{t("callback.choose_submit")}}</button>
</form>
% end

<div class="nav">
  <a href="{{link(day=(day - day.resolution).isoformat())}}" id="previous-day">{{t("nav.previous")}}</a>
  % if day < today:
  <a href="{{link(day=(day + day.resolution).isoformat())}}" id="next-day">{{t("nav.next")}}</a>
  <a href="{{link(day=today.isoformat())}}" id="today">{{t("nav.today")}}</a>
  % end
  <a href="calls.csv{{link()}}" id="csv-link">{{t("nav.csv")}}</a>
  <a href="/sent" id="sent-link">{{t("nav.sent")}}</a>
</div>
<form method="get" action="" id="day-form">
  <label for="day">{{t("day.label")}}</label>
  <input type="date" id="day" name="day" value="{{day.isoformat()}}" max="{{today.isoformat()}}">
  % if summary.dids or did:
  <label for="did">{{t("line.label")}}</label>
  <select id="did" name="did">
    <option value="">{{t("line.all")}}</option>
    % for line in sorted(set(summary.dids) | ({did} if did else set())):
    <option value="{{line}}"{{!" selected" if line == did else ""}}>{{line_name(line) or number_text(line)}}{{" · " + number_text(line) if line_name(line) else ""}}</option>
    % end
  </select>
  % end
  <button type="submit">{{t("day.submit")}}</button>
</form>

% if not recording:
<p class="muted">{{t("calls.not_recording")}}</p>
% elif calls_error:
<p class="status error" id="calls-error">{{t("calls.unreadable")}} <bdi dir="ltr">{{calls_error}}</bdi></p>
% else:
% callers_total = summary.open_callers + summary.resolved_callers
<p id="summary">
  <b>{{t("summary.calls_one" if summary.total == 1 else "summary.calls", total=summary.total)}}</b>
  % for outcome, count in summary.outcomes.items():
  <span class="count {{outcome.replace(' ', '-')}}" data-outcome="{{outcome}}"><b>{{count}}</b> {{t("outcome." + outcome)}}</span>
  % end
  % if "no answer recorded" in summary.outcomes:
  <span class="muted" id="missed-total">({{t("summary.missed_total", count=summary.missed)}})</span>
  % end
  <br><span id="callers-summary">{{t("summary.callers_one" if callers_total == 1 else "summary.callers", total=callers_total, open=summary.open_callers, resolved=summary.resolved_callers)}}</span>
</p>

% waiting = [caller for caller in missed_callers if not caller.resolved]
% dealt = [caller for caller in missed_callers if caller.resolved]
<h2 id="waiting-heading">{{t("waiting.heading")}} ({{summary.open_callers}})</h2>
% if not summary.open_callers:
<p class="muted" id="nobody-waiting">{{t("waiting.none")}}</p>
% elif waiting:
<table id="waiting">
<thead><tr><th>{{t("col.caller")}}</th><th>{{t("col.tries")}}</th><th>{{t("col.first")}}</th><th>{{t("col.last")}}</th><th>{{t("col.line")}}</th><th></th></tr></thead>
<tbody>
% for caller in waiting:
<tr class="waiting" data-number="{{caller.e164}}">
  <td class="name">
  % who(caller.name, caller.company, caller.caller, caller.e164, dial=callback is None or not callback.extensions)
  % pending = callback.pending(caller.e164, caller.last.timestamp()) if callback is not None and caller.e164 else None
  % if pending:
  <br><span class="callback-pending">{{t("callback.pending", agent=pending[0], time=clock(pending[1]))}}</span>
  % end
  </td>
  <td class="tries">{{caller.tries}}</td>
  <td>{{clock(caller.first)}}</td>
  <td>{{clock(caller.last)}}</td>
  <td><bdi>{{caller.did_name or number_text(caller.did)}}</bdi></td>
  <td>
    % if callback is not None and callback.extensions and caller.e164:
    <form method="post" action="/callback" class="callback-form">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <input type="hidden" name="number" value="{{caller.e164}}">
      <input type="hidden" name="next" value="{{here}}">
      <button type="submit" title="{{t('callback.button_help')}}">{{t("callback.button")}}</button>
    </form>
    % end
    <form method="post" action="/calls/mark" class="mark-handled">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <input type="hidden" name="ivrid" value="{{caller.last_ivrid}}">
      <input type="hidden" name="mark" value="handled">
      <input type="hidden" name="next" value="{{here}}">
      <button type="submit">{{t("mark.handled_button")}}</button>
    </form>
  </td>
</tr>
% end
</tbody>
</table>
% end

% if dealt:
<h2 id="resolved-heading">{{t("resolved.heading")}} ({{summary.resolved_callers}})</h2>
<table id="resolved">
<thead><tr><th>{{t("col.caller")}}</th><th>{{t("col.tries")}}</th><th>{{t("col.first")}}</th><th>{{t("col.last")}}</th><th>{{t("col.line")}}</th><th>{{t("col.how")}}</th></tr></thead>
<tbody>
% for caller in dealt:
<tr class="resolved {{caller.resolved.replace(' ', '-')}}" data-number="{{caller.e164}}">
  <td class="name">
  % who(caller.name, caller.company, caller.caller, caller.e164)
  </td>
  <td class="tries">{{caller.tries}}</td>
  <td>{{clock(caller.first)}}</td>
  <td>{{clock(caller.last)}}</td>
  <td><bdi>{{caller.did_name or number_text(caller.did)}}</bdi></td>
  <td class="how">{{t("resolved." + caller.resolved, time=clock(caller.resolved_at))}}</td>
</tr>
% end
</tbody>
</table>
% end
% pages("callers", callers_from, callers_total)

<h2 id="calls-heading">{{t("day.calls")}} ({{summary.total}})</h2>
% if not calls:
<p class="muted" id="no-calls">{{t("calls.none")}}</p>
% else:
<table id="calls">
<thead><tr><th>{{t("col.time")}}</th><th>{{t("col.direction")}}</th><th>{{t("col.outcome")}}</th><th>{{t("col.caller")}}</th>
<th>{{t("col.answered_by")}}</th><th>{{t("col.duration")}}</th><th>{{t("col.line")}}</th><th>{{t("col.recording")}}</th><th>{{t("col.mark")}}</th></tr></thead>
<tbody>
% for call in calls:
<tr class="{{call.outcome.replace(' ', '-')}}" id="call-{{call.ivrid}}" data-ivrid="{{call.ivrid}}">
  <td>{{clock(call.started, seconds=True)}}</td>
  <td>{{t("direction." + call.direction, default=call.direction)}}</td>
  <td class="outcome">{{t("outcome." + call.outcome, default=call.outcome)}}
    % if call.status and call.status.upper() != "ANSWER":  # the outcome says so
    <br><span class="muted call-status" data-status="{{call.status}}"><bdi>{{t("call_status." + call.status.upper(), default=call.status)}}</bdi></span>
    % end
  </td>
  <td class="name">
    % who(call.name, call.company, call.target if call.direction == "outgoing" and call.target else call.caller, call.e164)
    % if call.tries > 1:
    <br><span class="muted">{{t("col.tries")}}: {{call.tries}}</span>
    % end
    % if call.url.startswith(("http://", "https://")):
    · <a href="{{call.url}}" rel="noopener noreferrer" target="_blank">{{t("link.crm")}}</a>
    % end
  </td>
  <td class="agent"><bdi>{{call.answered_by}}</bdi></td>
  <td dir="ltr">{{"" if call.duration is None else "%d:%02d" % divmod(call.duration, 60)}}</td>
  <td class="line"><bdi>{{call.did_name or number_text(call.did)}}</bdi></td>
  <td>
    % if call.recording:
    <a href="{{call.recording}}" rel="noopener noreferrer" target="_blank" class="recording">{{t("recording.listen")}}</a>
    % end
  </td>
  <td class="mark">
    % if editing == call.ivrid:
    <form method="post" action="/calls/mark" class="mark-form">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <input type="hidden" name="ivrid" value="{{call.ivrid}}">
      <input type="hidden" name="next" value="/calls{{link(calls=calls_from, callers=callers_from)}}#call-{{call.ivrid}}">
      <select name="mark" aria-label="{{t('col.mark')}}">
        % for value in ("", *marks):
        <option value="{{value}}"{{!" selected" if value == call.mark else ""}}>{{t("mark." + (value or "none"))}}</option>
        % end
      </select>
      <input type="text" name="note" value="{{call.note}}" maxlength="{{max_note}}" dir="auto" aria-label="{{t('mark.note')}}" placeholder="{{t('mark.note')}}">
      <button type="submit">{{t("mark.save")}}</button>
      <a href="{{link(calls=calls_from, callers=callers_from)}}#call-{{call.ivrid}}">{{t("mark.cancel")}}</a>
    </form>
    % else:
    % if call.mark:
    <b class="mark-value">{{t("mark." + call.mark)}}</b>
    % end
    % if call.note:
    <bdi class="note">{{call.note}}</bdi>
    % end
    <a href="{{link(calls=calls_from, callers=callers_from, edit=call.ivrid)}}#call-{{call.ivrid}}" class="edit-mark">{{t("mark.edit")}}</a>
    % end
  </td>
</tr>
% end
</tbody>
</table>
% pages("calls", calls_from, summary.total)
% end
% end

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

<h2 id="cdr-heading">{{t("cdr.heading")}}</h2>
<p class="muted" id="cdr-help">{{t("cdr.help_pulled" if call_log else "cdr.help")}}</p>
<pre dir="ltr" id="cdr-url">{{cdr_url}}…</pre>
<p class="muted">{{t("cdr.answers")}} <code dir="ltr">{"Err": 0, "Errdesc": "OK", "err": 0, "errdesc": "OK"}</code></p>
<p class="muted">{{t("calls.footer")}} <a href="health" dir="ltr" id="health-link">/health</a>.</p>
