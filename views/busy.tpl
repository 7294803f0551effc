%# A form that could not be kept because the calls database was busy (locked by
%# another writer): nothing was changed. back: the local page the form came from.
% rebase("layout", title=t("busy.title"))
<div class="box">
<h1>{{t("busy.title")}}</h1>
<p id="busy-reason" role="alert">{{t("busy.text")}}</p>
<p><a href="{{back}}" id="busy-back">{{t("busy.back")}}</a></p>
</div>
