%# What Voicenter sent (see sent_page()): rows (SentRow, newest first), kept (how many
%# are kept), flags ((pop-ups whose phase was not read, CDRs whose time was not read)),
%# today (the date in the pages' zone) and zone_name.
% rebase("layout", title=t("sent.title"))
<style nonce="{{nonce}}">
  tr.flagged td { background: #fef3f2; }
  .flag { color: var(--missed); font-weight: 600; }
  td .others { font-size: .85rem; }
</style>
<h1>{{t("sent.title")}}</h1>
<p class="nav"><a href="/calls" id="calls-link">{{t("nav.calls_page")}}</a></p>
<p class="muted" id="sent-help">{{t("sent.help", kept=kept)}}</p>
<p class="muted" id="time-zone">{{t("status.zone", zone="\u2068" + zone_name + "\u2069")}}</p>
% if flags[0] or flags[1]:
<p class="status" id="sent-flags">
  % if flags[0]:
  <span class="error" id="flag-phases">{{t("status.flag_phases", count=flags[0])}}</span>
  % end
  % if flags[1]:
  <span class="error" id="flag-times">{{t("status.flag_times", count=flags[1])}}</span>
  % end
</p>
% end
% if not rows:
<p class="muted" id="nothing-sent">{{t("sent.none")}}</p>
% else:
<table id="sent">
<thead><tr><th>{{t("sent.col_time")}}</th><th>{{t("sent.col_request")}}</th><th>{{t("sent.col_phase")}}</th>
<th>{{t("sent.col_number")}}</th><th>{{t("sent.col_matched")}}</th><th>{{t("sent.col_answer")}}</th></tr></thead>
<tbody>
% for row in rows:
<tr class="{{row.kind}}{{' flagged' if row.flag else ''}}" data-kind="{{row.kind}}" data-flag="{{row.flag or ''}}">
  <td class="when">{{t.time(row.when, today, seconds=True)}}</td>
  <td>{{t("sent." + row.kind)}}<br><span class="muted">{{t(row.how)}}</span>
    % if row.ivrid:
    <br><bdi dir="ltr" class="muted ivrid">{{row.ivrid}}</bdi>
    % end
  </td>
  <td class="phase">
    % if row.phase:
    <bdi dir="ltr" class="as-sent">{{row.phase}}</bdi> {{t("sent.arrow")}}
    % end
    {{t(row.phase_read)}}
    % if row.started:
    <br><span class="muted">{{t("sent.started")}} <bdi class="started">{{t.time(row.started, today, seconds=True)}}</bdi></span>
    % end
    % if row.flag:
    <br><span class="flag">{{t(row.flag)}}</span>
    % end
  </td>
  <td class="number">
    % if row.number:
    <bdi dir="ltr" class="as-sent">{{row.number}}</bdi> {{t("sent.arrow")}}
    % if row.e164:
    <bdi dir="ltr" class="read">{{row.e164}}</bdi>
    % else:
    {{t("sent.not_a_number")}}
    % end
    % else:
    <span class="muted">{{t("sent.no_number")}}</span>
    % end
  </td>
  <td class="matched">
    % if row.matched is not None:
    <b>{{row.matched}}</b>
    % if row.name:
    <bdi>{{row.name}}</bdi>
    % end
    % end
  </td>
  <td class="answer">
    <bdi dir="ltr"><b>{{row.answer}}</b> {{row.answer_text}}</bdi>
    % if row.caller_link:
    <br><span class="muted">{{t("sent.caller_link")}}</span>
    % end
    % if row.others:
    <br><span class="muted others">{{t("sent.others")}} <bdi dir="ltr">{{", ".join(row.others[:20])}}</bdi></span>
    % end
  </td>
</tr>
% end
</tbody>
</table>
% end
