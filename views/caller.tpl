%# A caller's page (see show_caller()): number as in the link, e164, national and
%# international forms; contacts (CallerRow, file order); unread ((source, count) of
%# each source shown from the served index: rows_of_number()); calls (Call, newest first);
%# by_link and link_query (?e=&s= for the forms when opened by a signed link);
%# form_token (the forms' csrf); problem (None or (text key, values)); form (values).
% rebase("layout", title=t("caller.title") + " \u2066" + number_text(number) + "\u2069")
% action_query = "?" + link_query if link_query else ""
% def e164_digits(number):
%   return "".join(ch for ch in number if ch.isdigit())
% end
<style nonce="{{nonce}}">
  .contact { border: 1px solid var(--line); border-radius: .5rem; padding: .5rem .9rem; margin: .75rem 0; }
  .contact h2 { margin: .25rem 0; }
  table.columns th { width: 12rem; font-size: .9rem; }
  .cell { white-space: pre-wrap; }
  form.fields, form.edit-form { flex-direction: column; align-items: stretch; max-width: 30rem; }
  form label { display: flex; flex-direction: column; gap: .2rem; }
  input:not([type]), textarea, select { font: inherit; padding: .35rem .5rem; border: 1px solid #d0d5dd;
            border-radius: .375rem; }
  .note-form { margin: 0; }
  .note-form textarea { min-width: 14rem; min-height: 2.2rem; }
  button.secondary { background: #f2f4f7; color: var(--missed); }
</style>
<h1>
% if contacts:
<bdi id="caller-name">{{contacts[0].name}}</bdi>
%   if contacts[0].company and contacts[0].company != contacts[0].name:
<span class="muted">· <bdi id="caller-company">{{contacts[0].company}}</bdi></span>
%   end
% else:
{{t("caller.unknown")}}
% end
</h1>
<p class="status" id="caller-numbers">
  % if national:
  <span>{{t("caller.national")}}: <bdi dir="ltr" id="caller-national">{{national}}</bdi></span>
  % end
  <span>{{t("caller.international")}}: <bdi dir="ltr" id="caller-international">{{international}}</bdi></span>
  <span><a href="tel:{{e164}}">{{t("caller.call")}}</a> · <a href="https://wa.me/{{e164_digits(e164)}}" rel="noopener noreferrer" target="_blank">{{t("caller.whatsapp")}}</a></span>
</p>
% if signed_in or not by_link:  # a signed link alone does not open the calls page
<p class="nav"><a href="/calls" id="calls-link">{{t("nav.calls_page")}}</a></p>
% end
% if by_link:
<p class="muted">{{t("caller.by_link")}}</p>
% end
% if callback is not None:
% include("callback_answer", t=t, callback=callback)
% pending = callback.pending(e164, max([call.started.timestamp() + 1 for call in calls] or [0]))
% if pending:
<p class="callback-pending" id="callback-pending">{{t("callback.pending", agent=pending[0], time=pending[1].strftime("%H:%M"))}}</p>
% end
% if callback.extensions:
<form method="post" action="/callback" class="callback-form" id="callback-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="number" value="{{e164}}">
  <input type="hidden" name="next" value="/caller/{{number_path}}">
  % if callback.mine_name:
  <span class="muted">{{t("callback.my_extension")}} <bdi>{{callback.mine_name}}</bdi></span>
  % end
  <button type="submit" title="{{t('callback.button_help')}}">{{t("callback.button")}}</button>
</form>
% end
% end
% if problem:
<p class="error" id="caller-problem" role="alert">{{t(problem[0], **problem[1])}}</p>
% end

<div id="contacts">
% for source, count in unread:
<p class="error caller-unread" role="status" data-source="{{source}}">{{t("caller.unread", source=source)}}
%   if count > 1:
{{t("caller.unread_more", count=count)}}
%   end
</p>
% end
% if contacts:
%   if len(contacts) > 1:
<p>{{t("caller.known", count=len(contacts))}}</p>
%   end
%   for contact in contacts:
<section class="contact">
<h2><bdi>{{contact.name}}</bdi>
%     if contact.company and contact.company != contact.name:
 · <bdi>{{contact.company}}</bdi>
%     end
</h2>
<p class="muted">{{t("caller.from", source=contact.source, row=contact.row)}}</p>
<table class="columns">
%     for header, text, kind in contact.columns:
<tr><th><bdi>{{t("field." + header.lower(), default=header) if contact.addition else header}}</bdi></th><td>
%       if kind in ("phone", "fax"):
%         if not contact.numbers.get(header):
<bdi dir="ltr">{{text}}</bdi>
%         end
%         for number in contact.numbers.get(header, []):
%           if kind == "fax":
<span class="fax"><bdi dir="ltr">{{number_text(number)}}</bdi></span>
%           else:
<span class="phone"><bdi dir="ltr">{{number_text(number)}}</bdi> <a href="tel:{{number}}">{{t("caller.call")}}</a> · <a href="https://wa.me/{{e164_digits(number)}}" rel="noopener noreferrer" target="_blank">{{t("caller.whatsapp")}}</a></span>
%           end
%         end
%       elif kind == "email":
<a href="mailto:{{text}}" dir="ltr">{{text}}</a>
%       elif kind == "link":
<a href="{{text.strip()}}" rel="noopener noreferrer" target="_blank" dir="ltr">{{text}}</a>
%       else:
<bdi class="cell">{{text}}</bdi>
%       end
</td></tr>
%     end
</table>
%     if contact.addition:
%       cells = dict((header.lower(), text) for header, text, kind in contact.columns)
<details class="edit">
<summary>{{t("caller.edit")}}</summary>
<form method="post" action="/caller/{{number_path}}/contact{{action_query}}" class="edit-form">
  <input type="hidden" name="csrf" value="{{form_token}}">
  <input type="hidden" name="row" value="{{contact.row}}">
  <label>{{t("field.name")}} <input name="name" value="{{cells.get('name', '')}}" maxlength="{{limits["name"]}}" dir="auto"></label>
  <label>{{t("field.company")}} <input name="company" value="{{cells.get('company', '')}}" maxlength="{{limits["company"]}}" dir="auto"></label>
  <label>{{t("field.phone")}} <input type="tel" name="phone" value="{{cells.get('phone', '')}}" maxlength="{{limits["phone"]}}" dir="ltr"></label>
  <label>{{t("field.notes")}} <textarea name="notes" maxlength="{{limits["notes"]}}" dir="auto">{{cells.get('notes', '')}}</textarea></label>
  <button type="submit">{{t("caller.save")}}</button>
</form>
<form method="post" action="/caller/{{number_path}}/contact{{action_query}}" class="remove-form">
  <input type="hidden" name="csrf" value="{{form_token}}">
  <input type="hidden" name="row" value="{{contact.row}}">
  <input type="hidden" name="remove" value="1">
  <button type="submit" class="secondary">{{t("caller.remove")}}</button>
</form>
</details>
%     end
</section>
%   end
% else:
<p class="muted" id="not-found">{{t("caller.not_found")}}</p>
<h2>{{t("caller.add")}}</h2>
<form method="post" action="/caller/{{number_path}}/contact{{action_query}}" id="add-form" class="fields">
  <input type="hidden" name="csrf" value="{{form_token}}">
  <label>{{t("field.name")}} <input name="name" id="add-name" value="{{form.get('name', '')}}" maxlength="{{limits["name"]}}" dir="auto"></label>
  <label>{{t("field.company")}} <input name="company" id="add-company" value="{{form.get('company', '')}}" maxlength="{{limits["company"]}}" dir="auto"></label>
  <label>{{t("field.phone")}} <input type="tel" name="phone" id="add-phone" value="{{form.get('phone', '')}}" maxlength="{{limits["phone"]}}" dir="ltr"></label>
  <label>{{t("field.notes")}} <textarea name="notes" id="add-notes" maxlength="{{limits["notes"]}}" dir="auto">{{form.get('notes', '')}}</textarea></label>
  <button type="submit">{{t("caller.add")}}</button>
</form>
<p class="muted">{{t("caller.add_help")}}</p>
% end
</div>

<h2 id="calls-heading">{{t("caller.calls")}} <span class="muted" id="time-zone">({{t("status.zone", zone="\u2068" + zone_name + "\u2069")}})</span></h2>
<div id="calls">
% if not recording:
<p class="muted">{{t("calls.not_recording")}}</p>
% elif calls_error:
<p class="status error" id="calls-error">{{t("calls.unreadable")}} <bdi dir="ltr">{{calls_error}}</bdi></p>
% elif not calls:
<p class="muted" id="no-calls">{{t("caller.no_calls")}}</p>
% else:
<table id="caller-calls">
<thead><tr><th>{{t("col.time")}}</th><th>{{t("col.outcome")}}</th><th>{{t("col.answered_by")}}</th><th>{{t("col.duration")}}</th><th>{{t("caller.note")}}</th></tr></thead>
<tbody>
%   for call in calls:
<tr class="{{call.outcome.replace(' ', '-')}}" data-ivrid="{{call.ivrid}}">
  <td>{{t.time(call.started)}}</td>
%     if call.direction == "outgoing":
%       # an agent made it: whether the client answered, and if not Voicenter's why
%       if call.answered:
%         said = "caller.called_back_by" if call.answered_by else "caller.called_back"
%       else:
%         said = "caller.not_reached_by" if call.answered_by else "caller.not_reached"
%       end
  <td class="outcome">{{t(said, agent=call.answered_by)}}
%       if call.status and not call.answered:
    <span class="call-status">(<bdi>{{t("call_status." + call.status.upper(), default=call.status)}}</bdi>)</span>
%       end
  </td>
  <td></td>
%     else:
  <td class="outcome">{{t("outcome." + call.outcome, default=call.outcome)}}</td>
  <td><bdi>{{call.answered_by}}</bdi></td>
%     end
  <td dir="ltr">{{"" if call.duration is None else "%d:%02d" % divmod(call.duration, 60)}}</td>
  <td>
%     if call.summary:
    <p class="ai-summary"><span class="muted">{{t("caller.summary")}}</span> <bdi>{{call.summary}}</bdi></p>
%     end
    <form method="post" action="/caller/{{number_path}}/call{{action_query}}" class="note-form">
      <input type="hidden" name="csrf" value="{{form_token}}">
      <input type="hidden" name="ivrid" value="{{call.ivrid}}">
      <textarea name="note" maxlength="{{max_note}}" dir="auto" aria-label="{{t('caller.note')}}">{{call.note}}</textarea>
      <select name="mark" aria-label="{{t('caller.mark')}}">
        <option value=""{{!' selected' if not call.mark else ''}}>{{t("mark.none")}}</option>
%     for mark in marks:
        <option value="{{mark}}"{{!' selected' if call.mark == mark else ''}}>{{t("mark." + mark)}}</option>
%     end
      </select>
      <button type="submit">{{t("caller.keep_note")}}</button>
    </form>
  </td>
</tr>
%   end
</tbody>
</table>
% end
</div>
