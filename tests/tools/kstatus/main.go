// Command kstatus prints the kstatus verdict for one Kubernetes object, the way Flux, Argo-less
// GitOps tools and `kubectl wait`-style tooling judge it (sigs.k8s.io/cli-utils/pkg/kstatus).
//
// It reads one object as JSON or YAML on stdin and prints {"status": ..., "message": ...} as JSON,
// so tests in any language can ask the real library instead of re-implementing its rules.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// verdict is what the checker prints: kstatus' status and message, plus the conditions kstatus
// would add to the object (Reconciling/Stalled) when it computes them itself.
type verdict struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	// YAML is a superset of JSON, so one conversion accepts both.
	doc, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("stdin is neither JSON nor YAML: %w", err)
	}
	// apimachinery's decoder keeps whole numbers as int64, which kstatus needs for generations.
	var obj map[string]interface{}
	if err := utiljson.Unmarshal(doc, &obj); err != nil || obj == nil {
		return fmt.Errorf("stdin is not one object (a JSON/YAML mapping): %v", err)
	}
	result, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return fmt.Errorf("kstatus could not compute a status: %w", err)
	}
	conditions := result.Conditions
	if conditions == nil {
		conditions = []status.Condition{}
	}
	return json.NewEncoder(out).Encode(verdict{
		Status:     result.Status.String(),
		Message:    result.Message,
		Conditions: conditions,
	})
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: kstatus < object.(json|yaml)")
		os.Exit(2)
	}
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
