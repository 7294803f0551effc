%# A call-back's answer in words (the calls page, a caller's page): callback.answer is
%# (text key, values) once, after the form's POST; see callback_view().
% if callback.answer:
<p id="callback-answer" class="callback-answer{{" ok" if callback.answer[0] == "callback.ringing" or callback.answer[0] == "callback.extension_chosen" else " error"}}" role="status">{{t(callback.answer[0], **callback.answer[1])}}</p>
% end
