// Code + label pickers (OPTIFLUX.md §8.4): choosing a label fills in the code and vice versa.
// Without JavaScript the server does the same when the form is sent.
document.querySelectorAll("input[data-picker]").forEach(function (input) {
  var select = document.getElementById(input.dataset.picker);
  if (!select) { return; }
  select.addEventListener("change", function () { input.value = select.value; });
  input.addEventListener("input", function () {
    var code = input.value.trim();
    var known = Array.prototype.some.call(select.options, function (o) { return o.value === code; });
    select.value = known ? code : "";
  });
});
